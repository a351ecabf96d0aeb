"""What a benchmark ran on: the CPU (model, torch's kernel capability, instruction-set flags, any
cap on the instruction set), the library and thread settings, and the routes the fast path chose
here, with the probes' own measurements (utils/cpu_probe.py, model/fp32_matmul.py, model/mrl.py)."""
import os

import torch

from model.fp32_matmul import onednn_fp32_is_exact, onednn_fp32_speed, use_onednn_fp32
from model.mrl import fused_on_cpu
from utils.cpu_probe import cpu_bf16_verdict, cpu_summary


def allocator():
    preload = os.environ.get('LD_PRELOAD', '')
    return 'tcmalloc' if 'tcmalloc' in preload else 'jemalloc' if 'jemalloc' in preload else 'glibc malloc'


def cpu_routes(sizes):
    """The CPU routes the fast path takes here and why (each probe runs once per process)."""
    verdict = cpu_bf16_verdict()
    routes = {'bf16_native': verdict.native, 'bf16_reason': verdict.reason,
              'bf16_probe_gflops': {'bf16': verdict.bf16_gflops, 'fp32': verdict.fp32_gflops},
              'fp32_onednn_exact': onednn_fp32_is_exact(), 'fp32_products_on_onednn': use_onednn_fp32(),
              'mrl_linear_fp32': 'fused' if fused_on_cpu(sizes) else 'per chunk'}
    if onednn_fp32_is_exact():
        speed = onednn_fp32_speed()
        routes['fp32_library_probe'] = {'onednn_ms': round(1e3 * speed.seconds, 2),
                                        'default_ms': round(1e3 * speed.baseline_seconds, 2),
                                        'onednn_time_ratio': round(speed.ratio, 3)}
    if verdict.native:
        routes['mrl_linear_bf16'] = 'fused' if fused_on_cpu(sizes, torch.bfloat16) else 'per chunk'
    return routes


def hardware(device, sizes):
    info = {'cpu': cpu_summary(), 'cores': os.cpu_count(), 'torch_threads': torch.get_num_threads(),
            'torch': torch.__version__, 'device': str(device), 'allocator': allocator(),
            'fp32_matmul_precision': torch.get_float32_matmul_precision(),
            'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY', 'default'),
            'load_average_at_start': os.getloadavg()[0]}
    if device.type == 'cpu':
        info['cpu_routes'] = cpu_routes(sizes)
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info
