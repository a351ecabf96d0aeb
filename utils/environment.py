"""RUN/environment.yaml: where and with what each start of a run computed.

One entry per start (the first and every --resume): Python, torch, CUDA, cuDNN, GPUs and the NVIDIA
driver when there is a GPU, the CPU and the instruction set torch's kernels use, the thread count,
the resolved device and process count, the host, the git commit of the code and whether its tree
had uncommitted changes, and the command line. Enough to tell why two runs differ in the last digits.
"""
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from utils.io import write_yaml

CODE_ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENT_FILE = 'environment.yaml'


def _command_output(command, cwd=None):
    """The stripped stdout of `command`, or None when it cannot run or fails (no git, no nvidia-smi)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def cpu_name():
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_state():
    """{'commit': sha or None, 'dirty': True/False/None}: tracked files changed since the commit."""
    commit = _command_output(['git', 'rev-parse', 'HEAD'], CODE_ROOT)
    if commit is None:
        return {'commit': None, 'dirty': None}
    status = _command_output(['git', 'status', '--porcelain', '--untracked-files=no'], CODE_ROOT)
    return {'commit': commit, 'dirty': None if status is None else bool(status)}


def gpu_state(device):
    if not torch.cuda.is_available():
        return {}
    driver = _command_output(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'])
    return {'gpus': [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            'nvidia_driver': driver.splitlines()[0] if driver else None,
            'cudnn': torch.backends.cudnn.version(),
            'device_name': torch.cuda.get_device_name(device) if torch.device(device).type == 'cuda' else None}


def environment_record(device, world_size=1, resumed_after_epoch=None):
    """A dict describing this process's software, hardware and code."""
    return {
        'started': time.strftime('%Y-%m-%d %H:%M:%S %z'),
        'resumed_after_epoch': resumed_after_epoch,
        'command': ' '.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        'host': socket.gethostname(),
        'python': platform.python_version(),
        'torch': str(torch.__version__),
        'cuda': torch.version.cuda,
        'device': str(device),
        'processes': world_size,
        'threads': torch.get_num_threads(),  # at the start: utils/thread_governor.py may change it (thread_changes)
        'omp_num_threads': os.environ.get('OMP_NUM_THREADS'),  # None: not set
        'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY'),
        'gomp_spincount': os.environ.get('GOMP_SPINCOUNT'),  # utils/omp_policy.py
        'cores_allowed': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(),
        'cpu': cpu_name(),
        'cpu_capability': torch.backends.cpu.get_cpu_capability(),
        'platform': platform.platform(),
        **git_state(),
        **gpu_state(device),
    }


def note_thread_changes(root, changes):
    """Add the thread changes of this start (utils/thread_governor.py) to its RUN/environment.yaml entry."""
    path = Path(root) / ENVIRONMENT_FILE
    try:
        entries = yaml.safe_load(path.read_text()) if path.exists() else None
    except yaml.YAMLError:
        entries = None
    if not isinstance(entries, list) or not entries or not isinstance(entries[-1], dict):
        return None
    entries[-1]['thread_changes'] = [{'seconds': seconds, 'from': before, 'to': after, 'other_runnable': others}
                                     for seconds, before, after, others in changes]
    write_yaml(path, entries)
    return path


def append_environment(root, record):
    """Add `record` to RUN/environment.yaml (a list, one entry per start)."""
    path = Path(root) / ENVIRONMENT_FILE
    entries = []
    if path.exists():
        try:
            entries = yaml.safe_load(path.read_text()) or []
        except yaml.YAMLError:
            entries = []  # damaged from outside: start the record again rather than stop the run
    if not isinstance(entries, list):
        entries = []
    write_yaml(path, entries + [record])
    return path
