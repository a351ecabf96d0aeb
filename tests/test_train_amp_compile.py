"""--amp bf16 and --compile through train.py, the Trainer and evaluation, on a tiny demo run.

bf16 arithmetic is tested only where it is native (CUDA with bf16, or a CPU with avx512_bf16 or
AMX): elsewhere oneDNN emulates it and a run takes many times as long, so that test is skipped with
the reason. That the option reaches every training step and every evaluation pass is checked on
any machine, with a recording stand-in for autocast. --compile is refused on the CPU
(tests/test_cuda_paths.py); here its set-up is checked with a stand-in compiler, and a real
compiled run where there is a GPU."""
import contextlib
import csv
import math

import pytest
import torch

import train as train_script
from evaluation import evaluate as evaluate_module
from runs.run_inputs import build_model, load_data
from trainer import trainer as trainer_module

SIZES = '4,8'
STEPS_PER_EPOCH = 5  # 1200 demo users / batch 256


def tiny_run(demo_root, run_dir, *options, epochs=1):
    return train_script.main(['--dataset_code', 'demo', '--data_root', str(demo_root), '--export_root', str(run_dir),
                              '--mrl_hidden_sizes', SIZES, '--num_epochs', str(epochs), '--train_batch_size', '256',
                              '--val_batch_size', '600', '--test_batch_size', '600', '--lr', '1e-3',
                              '--no-use_tensorboard', *options])


def cpu_flags():
    try:
        with open('/proc/cpuinfo') as handle:
            return {flag for line in handle if line.startswith(('flags', 'Features')) for flag in line.split()}
    except OSError:
        return set()


def native_bf16(device):
    """(native, why): bf16 products in hardware on `device`, as the benchmark's bf16 rule has it."""
    if device == 'cuda':
        native = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        return native, 'no GPU with native bf16'
    flags = cpu_flags()
    native = bool(flags & {'avx512_bf16', 'amx_bf16', 'bf16'})  # x86 AVX-512 BF16 / AMX, Arm BF16
    return native, (f'this CPU has no native bf16 (torch capability {torch.backends.cpu.get_cpu_capability()}, '
                    f'no avx512_bf16/amx_bf16 flag): bf16 is emulated there and a run would be slow')


def train_losses(run_dir):
    with open(run_dir / 'logs' / 'logs.csv', newline='') as handle:
        return [float(row['train_loss']) for row in csv.DictReader(handle)]


# ---- --amp bf16 -------------------------------------------------------------------------------
def test_amp_bf16_reaches_every_training_step_and_every_evaluation_pass(demo_root, tmp_path, monkeypatch):
    """autocast replaced by a recorder (no bf16 arithmetic, so any CPU runs it): with --amp bf16
    every step of training and every validation and test pass asks for bf16; without, none does."""
    for amp in ('bf16', 'none'):
        calls = {'train': [], 'eval': []}

        def recorder(where):
            def autocast(device, requested):
                calls[where].append(requested)
                return contextlib.nullcontext()
            return autocast
        monkeypatch.setattr(trainer_module, 'autocast', recorder('train'))
        monkeypatch.setattr(evaluate_module, 'autocast', recorder('eval'))
        tiny_run(demo_root, tmp_path / amp, '--amp', amp, epochs=2)
        assert calls['train'] == [amp] * (2 * STEPS_PER_EPOCH)
        # per pass: the item table once, then two batches of 600 users; 2 validations and the test
        assert calls['eval'] == [amp] * (3 * 3)


@pytest.mark.parametrize('device', ['cpu', 'cuda'])
def test_a_bf16_run_trains_and_evaluates_like_fp32(demo_root, tmp_path, device):
    native, why = native_bf16(device)
    if not native:
        pytest.skip(why)
    fp32 = tiny_run(demo_root, tmp_path / 'fp32', '--device', device, epochs=2)
    bf16 = tiny_run(demo_root, tmp_path / 'bf16', '--device', device, '--amp', 'bf16', epochs=2)
    # bf16 moves the loss in its 4th-5th digit (docs/distributed.md); 1% leaves room for 10 steps
    for low, exact in zip(train_losses(tmp_path / 'bf16'), train_losses(tmp_path / 'fp32')):
        assert math.isfinite(low) and low == pytest.approx(exact, rel=1e-2)
    for size in SIZES.split(','):
        assert bf16[size]['NDCG@10'] == pytest.approx(fp32[size]['NDCG@10'], abs=0.03), size


# ---- --compile --------------------------------------------------------------------------------
class RecordingModule(torch.nn.Module):
    """What a compiler returns: the same computation behind another module; counts the calls."""

    def __init__(self, module):
        super().__init__()
        self.module, self.calls = module, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.module(*args, **kwargs)


def test_compile_wraps_the_module_every_training_step_goes_through(demo_root, tmp_path, monkeypatch):
    """Where --compile is accepted, train.py hands the training module to compile_for_training and
    the Trainer steps through what it returns (evaluation keeps the plain model); stand-ins for
    the CPU refusal and the compiler, which takes minutes on a CPU."""
    compiled = []

    def compile_for_training(module):
        compiled.append(RecordingModule(module))
        return compiled[-1]
    monkeypatch.setattr(train_script, 'check_compile', lambda requested, device: None)
    monkeypatch.setattr(train_script, 'compile_for_training', compile_for_training)
    plain = tiny_run(demo_root, tmp_path / 'plain', epochs=2)
    assert compiled == []
    with_compile = tiny_run(demo_root, tmp_path / 'compiled', '--compile', epochs=2)
    assert len(compiled) == 1 and isinstance(compiled[0].module, torch.nn.Module)
    assert compiled[0].calls == 2 * STEPS_PER_EPOCH
    assert with_compile == plain  # the same computation: the same metrics


# Dropout off: compiled code draws its masks with its own random stream, so with dropout the two runs
# would differ by their masks, not only by the compiler's rounding.
WITHOUT_DROPOUT = ('--lru_dropout', '0', '--lru_attn_dropout', '0')


def test_the_options_of_the_compiled_comparison_turn_every_dropout_layer_off(demo_root, tmp_path):
    """The CUDA comparison below compares like with like only if no layer of the model keeps a
    dropout probability of its own."""
    def dropout_rates(*options):
        args = train_script.parse_args(['--dataset_code', 'demo', '--data_root', str(demo_root),
                                        '--export_root', str(tmp_path), '--mrl_hidden_sizes', SIZES, *options])
        data, _, features = load_data(args)
        model = build_model(args, data.num_items, features)
        return [module.p for module in model.modules() if isinstance(module, torch.nn.Dropout)]
    assert dropout_rates() and all(rate > 0 for rate in dropout_rates())  # the defaults: dropout everywhere
    assert set(dropout_rates(*WITHOUT_DROPOUT)) == {0.0}


@pytest.mark.skipif(not torch.cuda.is_available(), reason='torch.compile runs only on CUDA (refused on the CPU)')
def test_a_compiled_run_on_cuda_matches_the_eager_run(demo_root, tmp_path):
    eager = tiny_run(demo_root, tmp_path / 'eager', '--device', 'cuda', *WITHOUT_DROPOUT)
    compiled = tiny_run(demo_root, tmp_path / 'compiled', '--device', 'cuda', '--compile', *WITHOUT_DROPOUT)
    assert train_losses(tmp_path / 'compiled')[0] == pytest.approx(train_losses(tmp_path / 'eager')[0], rel=1e-3)
    for size in SIZES.split(','):
        assert compiled[size]['NDCG@10'] == pytest.approx(eager[size]['NDCG@10'], abs=0.02), size
