"""CPU routes chosen by capability and measured speed (issue 17): bf16 autocast only where bf16 is
native, oneDNN fp32 products and fused MRL linears only where the probe does not find them clearly
slower, and the benchmark that skips what the CPU cannot do natively. The probes' measurements are
replaced by stand-ins here, so every outcome is tested on any CPU."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import train_throughput
from model import fp32_matmul, mrl
from utils import cpu_probe, runtime
from utils.cpu_probe import Bf16Verdict, Comparison

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device('cpu')


# ---- bf16: native or fp32 with a warning --------------------------------------------------------
@pytest.fixture
def fresh_bf16(monkeypatch):
    """No cached verdict, no warning printed yet, and this CPU's own bf16 report out of the way."""
    monkeypatch.setattr(cpu_probe, '_bf16_verdict', None)
    monkeypatch.setattr(runtime, '_warned', set())
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: False)
    monkeypatch.delenv(cpu_probe.BF16_ENV, raising=False)

    def machine(flags, bf16_gflops, fp32_gflops=100.0):
        calls = []
        monkeypatch.setattr(cpu_probe, 'cpu_flags', lambda: set(flags))
        monkeypatch.setattr(cpu_probe, 'measure_bf16_rates', lambda: calls.append(1) or (
            bf16_gflops, fp32_gflops, bf16_gflops / fp32_gflops))
        return calls
    return machine


def autocast_state(amp):
    with runtime.autocast(CPU, amp):
        return torch.is_autocast_enabled('cpu'), torch.get_autocast_dtype('cpu')


def test_native_bf16_autocasts_in_bf16_without_a_warning(fresh_bf16, capsys):
    calls = fresh_bf16({'avx2', 'avx512f', 'avx512_bf16'}, bf16_gflops=380.0, fp32_gflops=200.0)
    assert autocast_state('bf16') == (True, torch.bfloat16)
    assert autocast_state('bf16') == (True, torch.bfloat16)
    assert calls == [1]  # probed once per process
    assert capsys.readouterr().err == ''
    assert autocast_state('none')[0] is False


@pytest.mark.parametrize('flags, bf16_gflops, why', [
    ({'avx2'}, 0.8, 'reports no bf16 instructions'),               # AVX2 (Zen 3): emulated, 0.01x
    ({'avx512f', 'avx512_bf16'}, 20.0, 'reports avx512_bf16 but'),  # flag present, kernels capped
], ids=['no flag', 'flag but slow'])
def test_without_native_bf16_one_warning_line_and_fp32(fresh_bf16, capsys, flags, bf16_gflops, why):
    fresh_bf16(flags, bf16_gflops)
    for _ in range(3):
        assert autocast_state('bf16')[0] is False  # fp32: no autocast at all
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith('warning: --amp bf16 runs in fp32 here') and why in lines[0]
    assert f'{bf16_gflops:.1f} GFLOP/s' in lines[0] and cpu_probe.BF16_ENV in lines[0]


def test_a_native_flag_alone_is_not_enough_and_no_flag_is_not_rescued_by_speed(fresh_bf16):
    fresh_bf16(set(), bf16_gflops=400.0)  # fast, but the CPU does not say it has bf16
    assert cpu_probe.cpu_bf16_verdict().native is False


def test_the_environment_overrides_the_decision_without_probing(fresh_bf16, monkeypatch):
    calls = fresh_bf16(set(), bf16_gflops=0.8)
    monkeypatch.setenv(cpu_probe.BF16_ENV, 'native')
    assert autocast_state('bf16') == (True, torch.bfloat16) and calls == []
    monkeypatch.setattr(cpu_probe, '_bf16_verdict', None)
    monkeypatch.setenv(cpu_probe.BF16_ENV, 'yes')
    with pytest.raises(ValueError, match='native or emulated'):
        cpu_probe.cpu_bf16_verdict()


def test_evaluation_follows_the_same_rule(fresh_bf16, capsys):
    """evaluation/evaluate.py asks runtime.autocast too: without native bf16 its table stays fp32."""
    from model.fmrlrec import FMRLRec
    fresh_bf16({'avx2'}, bf16_gflops=0.8)
    features = torch.nn.functional.normalize(torch.randn(11, 8), dim=1)
    model = FMRLRec(10, [4, 8], features, None, num_blocks=1)
    with runtime.autocast(CPU, 'bf16'):
        table = model.item_table()
    assert table.dtype == torch.float32 and 'warning: --amp bf16' in capsys.readouterr().err
    with cpu_probe.bf16_verdict_set_to(Bf16Verdict(True, 'native')), runtime.autocast(CPU, 'bf16'):
        assert model.item_table().dtype == torch.bfloat16  # where native, the same call computes in bf16


# ---- the probes' own machinery --------------------------------------------------------------------
def test_bare_leaves_the_callers_state_alone():
    threads = torch.get_num_threads()
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        with cpu_probe.bare():
            assert torch.get_num_threads() == 1 and torch.is_grad_enabled()
            assert not torch.is_autocast_enabled('cpu')
            torch.rand(100)  # would move the caller's random stream
        assert torch.is_autocast_enabled('cpu') and not torch.is_grad_enabled()
    assert torch.equal(torch.rand(4), expected) and torch.get_num_threads() == threads


def test_compare_takes_the_median_ratio_within_rounds():
    """A route sleeping 2 ms against one sleeping 1 ms, with one round disturbed: ratio about 2."""
    import time
    disturbed = iter([0.02] + [0.0] * 100)
    result = cpu_probe.compare(lambda: time.sleep(0.002 + next(disturbed)), lambda: time.sleep(0.001), rounds=5)
    assert 1.4 < result.ratio < 2.6 and result.seconds > result.baseline_seconds


# ---- oneDNN for fp32 products: exact AND not clearly slower ----------------------------------------
@pytest.fixture
def onednn_probe(monkeypatch):
    def machine(exact, ratio):
        calls = []
        monkeypatch.setattr(fp32_matmul, '_verdict', exact)
        monkeypatch.setattr(fp32_matmul, '_speed', None)
        monkeypatch.setattr(fp32_matmul, 'measure_library_speed',
                            lambda: calls.append(1) or Comparison(ratio, 0.01 * ratio, 0.01))
        return calls
    return machine


def precision_inside_fast_block():
    with fp32_matmul.fast_fp32_matmul(CPU):
        return torch.backends.mkldnn.matmul.fp32_precision


@pytest.mark.parametrize('exact, ratio, routed', [
    (True, 0.3, True),    # oneDNN 3x faster (Zen 4's logits)
    (True, 1.1, True),    # level: the default route stays (no flip with the noise)
    (True, 2.0, False),   # oneDNN clearly slower: MKL
    (False, 0.3, False),  # faster but not exact: never
], ids=['faster', 'level', 'slower', 'inexact'])
def test_onednn_route_needs_exactness_and_no_clear_loss(onednn_probe, exact, ratio, routed):
    calls = onednn_probe(exact, ratio)
    precision = torch.backends.mkldnn.matmul.fp32_precision
    assert fp32_matmul.use_onednn_fp32() is routed
    assert precision_inside_fast_block() == ('bf16' if routed else precision)
    assert torch.backends.mkldnn.matmul.fp32_precision == precision
    # measured only where exact, and a second time only to confirm leaving the route; never again
    assert calls == ([] if not exact else [1] if routed else [1, 1])
    fp32_matmul.use_onednn_fp32()
    assert len(calls) <= 2


def test_a_route_is_left_only_when_a_second_measurement_agrees(onednn_probe, monkeypatch):
    onednn_probe(True, 1.0)
    burst = iter([Comparison(2.0, 0.02, 0.01), Comparison(1.05, 0.0105, 0.01)])  # a neighbour's burst, then level
    monkeypatch.setattr(fp32_matmul, 'measure_library_speed', lambda: next(burst))
    assert fp32_matmul.use_onednn_fp32() is True and fp32_matmul.onednn_fp32_speed().ratio == 1.05
    slow = iter([Comparison(2.0, 0.02, 0.01), Comparison(1.6, 0.016, 0.01)])
    assert cpu_probe.settled(lambda: next(slow), lambda c: c.ratio > 1.25).ratio == 2.0  # both agree: left


def test_the_library_probe_measures_real_products_quickly():
    import time
    started = time.perf_counter()
    result = fp32_matmul.measure_library_speed()
    assert result.seconds > 0 and result.baseline_seconds > 0 and result.ratio > 0
    assert time.perf_counter() - started < 3  # a fraction of a second on an idle machine


# ---- MRL linears: fused or per chunk --------------------------------------------------------------
@pytest.fixture
def mrl_probe(monkeypatch):
    def machine(ratio):  # fused time / per-chunk time
        calls = []
        monkeypatch.setattr(mrl, '_fused_verdicts', {})
        monkeypatch.setattr(mrl, 'measure_fused_against_chunked',
                            lambda sizes, dtype: calls.append((tuple(sizes), dtype)) or Comparison(ratio, ratio, 1.0))
        return calls
    return machine


@pytest.mark.parametrize('ratio, fp32_fused, bf16_fused', [
    (0.5, True, True),    # fused twice as fast: fused in fp32 too
    (1.0, False, True),   # level: the defaults (per chunk in fp32, fused under autocast)
    (2.0, False, False),  # fused twice as slow: per chunk under autocast too
])
def test_mrl_route_follows_the_probe_with_the_defaults_when_level(mrl_probe, ratio, fp32_fused, bf16_fused):
    calls = mrl_probe(ratio)
    layer = mrl.MRLLinear([128, 256])
    x = torch.randn(3, 256)
    assert layer.use_fused(x) is fp32_fused
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert layer.use_fused(x) is bf16_fused
    layer.use_fused(x)
    # once per (sizes, dtype), twice where the default route is left (the second to confirm)
    fp32_calls = 2 if fp32_fused else 1
    bf16_calls = 1 if bf16_fused else 2
    assert calls == [((128, 256), torch.float32)] * fp32_calls + [((128, 256), torch.bfloat16)] * bf16_calls
    layer.fused = not fp32_fused  # an explicit choice wins
    assert layer.use_fused(x) is (not fp32_fused)


def test_narrow_layers_keep_the_defaults_unprobed(mrl_probe):
    calls = mrl_probe(0.1)
    layer = mrl.MRLLinear([8, 16])
    assert layer.use_fused(torch.randn(2, 16)) is False
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert layer.use_fused(torch.randn(2, 16)) is True
    assert calls == []


# ---- the benchmark: what is not native is skipped, and said --------------------------------------
def test_bf16_plan_skips_what_is_not_native_and_no_bf16_skips_everything():
    with cpu_probe.bf16_verdict_set_to(Bf16Verdict(False, 'emulated here')):
        assert train_throughput.bf16_plan(None, CPU) == (
            False, False, 'bf16 is not native here: emulated here (--bf16 measures it anyway)')
        assert train_throughput.bf16_plan(True, CPU) == (True, True, None)  # forced, labelled emulated
    with cpu_probe.bf16_verdict_set_to(Bf16Verdict(True, 'avx512_bf16')):
        assert train_throughput.bf16_plan(None, CPU) == (True, False, None)
        assert train_throughput.bf16_plan(False, CPU) == (False, False, '--no-bf16')


def test_no_bf16_skips_the_memory_probes_bf16_variant(monkeypatch):
    started = []

    def fake_run(command, **options):
        started.append(command[2])
        return subprocess.CompletedProcess(command, 0, json.dumps({'variant': command[2]}) + '\n', '')
    monkeypatch.setattr(train_throughput.subprocess, 'run', fake_run)
    options = type('Options', (), dict(batch_size=32, eval_batch_size=64, sizes='4,8', blocks=1, device='cpu',
                                       users=10, items=10, feature_dim=8))
    train_throughput.measure_memory(options, use_bf16=False, bf16_forced=False)
    assert started == ['train_reference', 'train_fast', 'eval_reference', 'eval_fast']
    started.clear()
    train_throughput.measure_memory(options, use_bf16=True, bf16_forced=False)
    assert 'train_fast_bf16' in started


def test_benchmark_with_no_bf16_measures_no_bf16_and_says_so(capsys):
    summary = train_throughput.main(['--users', '200', '--items', '100', '--feature_dim', '8', '--sizes', '4,8',
                                     '--rounds', '1', '--fast_per_round', '1', '--eval_reference_batches', '1',
                                     '--eval_batch_size', '32', '--matmul_size', '128', '--no-memory', '--no-bf16'])
    assert 'fast_bf16' not in summary['train_seq_per_s'] and 'fast_bf16' not in summary['eval_users_per_s']
    assert 'bf16' not in summary['matmul_gflops'] and summary['bf16_measured'] is False
    assert list(summary['skipped'].values()) == ['--no-bf16']
    table = capsys.readouterr().out
    assert '| fast_bf16 | skipped' in table and 'skipped: bf16' in table
    cpu = summary['config']['hardware']['cpu']
    assert cpu['torch_capability'] == torch.backends.cpu.get_cpu_capability() and cpu['model'] and 'flags' in cpu


def test_the_benchmark_runs_as_a_script_from_anywhere(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'train_throughput.py'), '--help'],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '--no-bf16' in done.stdout and 'usage:' in done.stdout



# ---- a resumed run takes the routes its first process took ---------------------------------------
def test_routes_taken_in_one_process_are_pinned_in_the_next_on_the_same_cpu(monkeypatch):
    from model import cpu_routes
    monkeypatch.setattr(fp32_matmul, '_verdict', True)  # exact here
    monkeypatch.setattr(fp32_matmul, '_pinned', None)
    monkeypatch.setattr(mrl, '_fused_verdicts', {})
    monkeypatch.setattr(fp32_matmul, '_speed', None)
    assert cpu_routes.taken()['onednn_fp32'] is None  # undecided: reporting probes nothing
    monkeypatch.setattr(fp32_matmul, '_speed', Comparison(0.9, 0.009, 0.01))  # the first process: level
    mrl.pin_routes({((8, 256), torch.float32): True})
    saved = json.loads(json.dumps(cpu_routes.taken()))  # as a checkpoint carries it
    assert saved['onednn_fp32'] is True and saved['mrl_fused'] == [[[8, 256], 'float32', True]]
    # The next process: its own probe would find oneDNN clearly slower (a busy machine), and the
    # fused layer is not decided yet; the pinned routes win.
    monkeypatch.setattr(fp32_matmul, '_speed', Comparison(2.0, 0.02, 0.01))
    monkeypatch.setattr(mrl, '_fused_verdicts', {})
    assert fp32_matmul.use_onednn_fp32() is False
    assert cpu_routes.pin(saved) is True
    assert fp32_matmul.use_onednn_fp32() is True and mrl.fused_is_faster_on_cpu((8, 256), torch.float32) is True
    monkeypatch.setattr(fp32_matmul, '_verdict', False)  # oneDNN not exact in this process: never taken
    assert fp32_matmul.use_onednn_fp32() is False
    monkeypatch.setattr(fp32_matmul, '_pinned', None)
    assert cpu_routes.pin({**saved, 'cpu_model': 'another CPU (AVX2)'}) is False
    assert fp32_matmul._pinned is None  # nothing pinned from another CPU
