"""The CUDA paths that a CPU can check: resuming a checkpoint whose tensors were saved on a GPU
(tagged cuda:1 here), the CUDA generator restored on another GPU index or with another number of
GPUs (torch.cuda mocked), the final test reading the best checkpoint to the CPU, bf16 support asked
of the training GPU, the --compile refusal on the CPU, and rank 0 building the data before the
other ranks read it (2 processes, gloo). What needs a real GPU is listed in docs/distributed.md."""
import contextlib
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

import train
from config import ConfigError, parse_args
from evaluation import final_evaluation
from model import fp32_matmul
from model.nested_loss import projected_chunk_count
from runs.run_folder import RECENT_CHECKPOINT, best_checkpoint_path
from runs.run_inputs import build_model, load_data
from tests.conftest import ROOT
from trainer import compile as compile_module
from trainer.rng import restore_rng_states, rng_states
from trainer.trainer import Trainer, rank_seed
from utils.runtime import bf16_is_native

CUDA_STATE = torch.arange(16, dtype=torch.uint8)  # a CUDA (Philox) state is 16 bytes: seed, offset


class FakeCuda:
    """torch.cuda on a machine with `count` GPUs, each generator's state recorded as the real ones
    check it: torch.cuda.set_rng_state takes a CPU byte tensor only."""

    def __init__(self, monkeypatch, count):
        self.count, self.current, self.states, self.seeds = count, 0, {}, {}
        for name in ('is_available', 'device_count', 'current_device', 'get_rng_state', 'set_rng_state',
                     'manual_seed', 'device'):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))
        monkeypatch.setattr(torch.cuda, 'get_rng_state_all', self.refuse_all)
        monkeypatch.setattr(torch.cuda, 'set_rng_state_all', self.refuse_all)

    def is_available(self):
        return True

    def device_count(self):
        return self.count

    def current_device(self):
        return self.current

    def _index(self, device):
        index = torch.device('cuda', device).index if isinstance(device, int) else torch.device(device).index
        index = self.current if index is None else index
        if index >= self.count:  # what CUDA says for a GPU that is not there
            raise RuntimeError(f'CUDA error: invalid device ordinal {index}')
        return index

    def get_rng_state(self, device='cuda'):
        return self.states.get(self._index(device), CUDA_STATE.clone())

    def set_rng_state(self, state, device='cuda'):
        if not (isinstance(state, torch.Tensor) and state.device.type == 'cpu' and state.dtype == torch.uint8):
            raise TypeError(f'RNG state must be a torch.ByteTensor, got {type(state).__name__}')
        self.states[self._index(device)] = state.clone()

    def manual_seed(self, seed):
        self.seeds[self.current] = seed

    @contextlib.contextmanager
    def device(self, index):
        previous, self.current = self.current, self._index(index)
        try:
            yield
        finally:
            self.current = previous

    @staticmethod
    def refuse_all(*_):
        raise AssertionError('every GPU generator saved or restored: only the training GPU\'s may be')


# ---- a checkpoint saved on a GPU ---------------------------------------------------------------
def tiny_trainer(demo_root, run_dir, device='cpu', init_seed=0):
    """A trainer of the demo at sizes 8,16 (seed 42); init_seed draws its weights and RNG states."""
    args = parse_args(['--dataset_code', 'demo', '--data_root', str(demo_root), '--export_root', str(run_dir),
                       '--mrl_hidden_sizes', '8,16', '--train_batch_size', '64'])
    torch.manual_seed(init_seed)
    random.seed(init_seed)
    data, splits, features = load_data(args)
    model = build_model(args, data.num_items, features)
    return Trainer(args, model, splits, run_dir, device, train.config_dict(args))


@contextlib.contextmanager
def storages_tagged(location):
    """torch.save as if every tensor lived on `location` (what a GPU run's checkpoint records)."""
    real = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: location
    try:
        yield
    finally:
        torch.serialization.location_tag = real


@pytest.fixture(scope='module')
def gpu_checkpoint(demo_root, tmp_path_factory):
    """A recent checkpoint after one step whose tensors (weights, AdamW state, RNG states, the
    training GPU's generator included) were, by their tags, saved from cuda:1."""
    run_dir = tmp_path_factory.mktemp('gpu_run')
    trainer = tiny_trainer(demo_root, run_dir)
    trainer.train_step(*trainer.batch(trainer.epoch_order(0)[:64]))
    trainer.epoch = 1
    state = trainer.state()
    state['rng_states']['cuda'] = CUDA_STATE + 1
    path = run_dir / 'models' / RECENT_CHECKPOINT
    path.parent.mkdir(parents=True)
    with storages_tagged('cuda:1'):
        torch.save(state, path)
    return path, state


def test_the_simulated_checkpoint_cannot_be_read_without_a_map_location(gpu_checkpoint):
    path, _ = gpu_checkpoint
    with pytest.raises(RuntimeError, match='CUDA'):  # what train.py hit with map_location=device
        torch.load(path, weights_only=False)


def test_a_gpu_checkpoint_resumes_on_the_cpu_with_every_state_in_place(gpu_checkpoint, demo_root, tmp_path,
                                                                         capsys):
    path, saved = gpu_checkpoint
    trainer = tiny_trainer(demo_root, tmp_path, init_seed=7)  # other weights, other RNG states
    train.load_resume_state(trainer, path, trainer.config_dict)
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, saved['model_state_dict'][name]), name
    for parameter in trainer.model.parameters():
        for value in trainer.optimizer.state[parameter].values():
            if isinstance(value, torch.Tensor) and value.dim():  # on the parameter's device
                assert value.device == parameter.device
    restored = trainer.optimizer.state_dict()['state']
    for index, values in saved['optimizer_state_dict']['state'].items():
        for key, value in values.items():
            assert torch.equal(torch.as_tensor(restored[index][key]), torch.as_tensor(value)), (index, key)
    assert torch.equal(torch.get_rng_state(), saved['rng_states']['torch'])
    assert random.getstate() == saved['rng_states']['python'] and trainer.epoch == 1
    assert 'trained on a GPU and resumes on the CPU' in capsys.readouterr().out


def test_a_gpu_checkpoint_resumes_exactly_on_another_gpu_index(gpu_checkpoint, demo_root, tmp_path, monkeypatch,
                                                                capsys):
    path, saved = gpu_checkpoint
    cuda = FakeCuda(monkeypatch, count=1)  # saved from cuda:1 of some machine; this one has only cuda:0
    trainer = tiny_trainer(demo_root, tmp_path, device=torch.device('cuda', 0))
    train.load_resume_state(trainer, path, trainer.config_dict)
    assert torch.equal(cuda.states[0], saved['rng_states']['cuda']) and not cuda.seeds
    assert torch.equal(torch.get_rng_state(), saved['rng_states']['torch'])
    assert 'resuming:' not in capsys.readouterr().out  # exact: nothing to say


def test_a_cpu_checkpoint_resumes_on_a_gpu_with_a_reproducible_cuda_stream(demo_root, tmp_path, monkeypatch,
                                                                            capsys):
    source = tiny_trainer(demo_root, tmp_path / 'cpu_run')
    source.epoch = 3
    path = tmp_path / RECENT_CHECKPOINT
    torch.save(source.state(), path)  # a CPU run: no CUDA generator in it
    cuda = FakeCuda(monkeypatch, count=2)
    trainer = tiny_trainer(demo_root, tmp_path / 'gpu_run', device=torch.device('cuda', 1))
    train.load_resume_state(trainer, path, trainer.config_dict)
    assert cuda.seeds == {1: rank_seed(42, 0, 3)} and not cuda.states
    assert 'trained on the CPU and resumes on a GPU' in capsys.readouterr().out


# ---- the final test of a GPU run ----------------------------------------------------------------
def test_the_final_test_reads_the_best_checkpoint_to_the_cpu_and_only_the_weights_reach_the_model(
        gpu_checkpoint, demo_root, tmp_path, monkeypatch):
    """The best checkpoint holds the AdamW state too (twice the weights): read to the GPU, all of it
    would sit there during the test. Read to the CPU, load_state_dict copies the weights alone."""
    _, saved = gpu_checkpoint
    run_dir = tmp_path / 'run'
    best_checkpoint_path(run_dir).parent.mkdir(parents=True)
    with storages_tagged('cuda:1'):
        torch.save(saved, best_checkpoint_path(run_dir))
    trainer = tiny_trainer(demo_root, run_dir, init_seed=7)  # other weights
    _, splits, _ = load_data(trainer.args)
    map_locations, evaluated_on = [], []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        map_locations.append(kwargs.get('map_location'))
        return real_load(*args, **kwargs)

    real_evaluate_ranks = final_evaluation.evaluate_ranks

    def evaluate_ranks(model, inputs, targets, histories, num_sizes, batch_size, device, *args, **kwargs):
        evaluated_on.append(device)  # the GPU pass itself runs on the CPU here
        return real_evaluate_ranks(model, inputs, targets, histories, num_sizes, batch_size, 'cpu', *args, **kwargs)
    monkeypatch.setattr(torch, 'load', recording_load)
    monkeypatch.setattr(final_evaluation, 'evaluate_ranks', evaluate_ranks)
    by_size = final_evaluation.evaluate_best_checkpoint(trainer.args, trainer.model, splits['test'], run_dir,
                                                        torch.device('cuda', 1), progress=False,
                                                        training_examples=splits['train'])
    assert map_locations == ['cpu'] and evaluated_on == [torch.device('cuda', 1)]
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, saved['model_state_dict'][name]), name
    assert sorted(by_size) == ['16', '8']


# ---- bf16 on the training GPU -------------------------------------------------------------------
def test_native_bf16_is_asked_of_the_gpu_that_trains_not_the_current_one(monkeypatch):
    cuda = FakeCuda(monkeypatch, count=2)  # GPU 0 before Ampere, GPU 1 with native bf16
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: cuda.current == 1)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: f'GPU {cuda._index(device)}')
    cuda.current = 0
    assert bf16_is_native(torch.device('cuda', 1))[0]
    assert cuda.current == 0  # the current GPU is left as it was
    cuda.current = 1
    assert bf16_is_native(torch.device('cuda', 0)) == (False, 'GPU 0 has no native bf16')
    assert bf16_is_native(torch.device('cuda'))[0]  # no index: the current GPU, as for the model
    assert cuda.current == 1


# ---- the CUDA generator: one per training GPU ------------------------------------------------
def test_only_the_training_gpus_generator_is_saved(monkeypatch):
    cuda = FakeCuda(monkeypatch, count=8)
    cuda.states[5] = CUDA_STATE + 5
    states = rng_states(torch.device('cuda', 5))
    assert torch.equal(states['cuda'], CUDA_STATE + 5)
    assert 'cuda' not in rng_states('cpu')


@pytest.mark.parametrize('saved_gpus, present_gpus, device_index, restored_from', [
    (8, 1, 0, 0),      # an 8-GPU run's older checkpoint resumed on 1 GPU
    (8, 8, 3, 3),      # torchrun's LOCAL_RANK 3
    (1, 2, 1, None),   # saved with 1 GPU, resumed on cuda:1: no state for it
    (2, 4, 3, None),
])
def test_older_checkpoints_with_every_gpus_generator(monkeypatch, saved_gpus, present_gpus, device_index,
                                                     restored_from):
    cuda = FakeCuda(monkeypatch, count=present_gpus)
    states = {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state(),
              'cuda': [CUDA_STATE + i for i in range(saved_gpus)]}
    note = restore_rng_states(states, torch.device('cuda', device_index), fallback_seed=99)
    assert 'older format' in note and '\n' not in note
    if restored_from is None:
        assert cuda.seeds == {device_index: 99} and not cuda.states
        assert f'none for GPU {device_index}' in note
    else:
        assert torch.equal(cuda.states[device_index], CUDA_STATE + restored_from) and not cuda.seeds
        assert f'exact if the run trained on GPU {device_index}' in note


def test_an_older_checkpoint_resumed_on_the_cpu_says_what_it_cannot_know():
    states = {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state(),
              'cuda': [CUDA_STATE]}  # held whenever CUDA was present, even by a CPU run
    assert restore_rng_states(states, 'cpu', fallback_seed=0).startswith('if the run was trained on a GPU')


def test_cuda_without_an_index_means_the_current_gpu(monkeypatch):
    cuda = FakeCuda(monkeypatch, count=2)
    cuda.current = 1
    states = {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state(),
              'cuda': CUDA_STATE + 2}
    assert restore_rng_states(states, torch.device('cuda'), fallback_seed=0) is None
    assert list(cuda.states) == [1] and torch.equal(cuda.states[1], CUDA_STATE + 2)


# ---- --compile --------------------------------------------------------------------------------
def test_compile_is_refused_on_the_cpu_with_one_line_before_anything_is_written(tmp_path):
    run_dir = tmp_path / 'run'
    with pytest.raises(SystemExit) as stopped:
        train.main(['--dataset_code', 'demo', '--data_root', str(tmp_path / 'data'), '--export_root', str(run_dir),
                    '--device', 'cpu', '--compile'])
    message = str(stopped.value.code)
    assert message.startswith('error: --compile does not help on the CPU') and '\n' not in message
    assert '--no-compile' in message and not run_dir.exists() and not (tmp_path / 'data').exists()


def test_compile_on_cuda_decides_the_cpu_probe_first_and_allows_dynamic_shapes(monkeypatch):
    compile_module.check_compile(True, torch.device('cuda', 0))  # accepted there
    with pytest.raises(ConfigError):
        compile_module.check_compile(True, torch.device('cpu'))
    calls = []
    monkeypatch.setattr(fp32_matmul, '_verdict', None)
    monkeypatch.setattr(torch, 'compile', lambda module, **options: calls.append((fp32_matmul._verdict, options)))
    compile_module.compile_for_training(torch.nn.Linear(2, 2))
    assert calls == [(fp32_matmul.onednn_fp32_is_exact(), {'dynamic': True})]
    assert calls[0][0] is not None  # decided before tracing starts


def test_the_chunk_choice_is_the_first_cheapest_as_before():
    widths = [8, 8, 16, 32, 64, 128, 256, 512]
    for rows in (1, 32, 220, 1600):
        for feature_dim in (64, 2048):
            for num_rows in (100, 12102):
                direct = [2 * num_rows * c * (2 * feature_dim + 3 * rows) for c in widths]
                factored = [4 * rows * feature_dim * num_rows + 6 * rows * c * feature_dim for c in widths]
                totals = [sum(direct[:m]) + sum(factored[m:]) for m in range(len(widths) + 1)]
                expected = min(range(len(totals)), key=totals.__getitem__)
                assert projected_chunk_count(widths, rows, feature_dim, num_rows) == expected


# ---- torchrun: rank 0 builds the data first ---------------------------------------------------
PROBE = '''
import os, sys, time
sys.path.insert(0, {root!r})
import train
real_load_data = train.load_data


def load_data(args, *say):
    rank = os.environ['RANK']
    with open({log!r}, 'a') as log:
        log.write(f'start {{rank}} demo_exists={{os.path.exists(os.path.join(args.data_root, "demo"))}}\\n')
    if rank == '0':
        time.sleep(1.0)  # a slow build: rank 1 must still wait for it
    loaded = real_load_data(args, *say)
    with open({log!r}, 'a') as log:
        log.write(f'end {{rank}}\\n')
    return loaded


def stop(*_, **__):  # the data is what this probe is about: stop before training
    raise SystemExit(0)


train.load_data = load_data
train.build_model = stop
train.main(sys.argv[1:])
'''


def torchrun_probe(tmp_path, argv):
    log = tmp_path / 'order.log'
    script = tmp_path / 'probe.py'
    script.write_text(PROBE.format(root=str(ROOT), log=str(log)))
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    env.pop('FMRLREC_FAULT', None)
    done = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                           str(script), *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    return done, (log.read_text().splitlines() if log.exists() else [])


def test_under_torchrun_rank_0_builds_the_data_and_the_others_then_read_it(tmp_path):
    data_root = tmp_path / 'data'  # empty: rank 0 generates the demo, with its feature tables
    done, order = torchrun_probe(tmp_path, ['--dataset_code', 'demo', '--data_root', str(data_root),
                                            '--export_root', str(tmp_path / 'run'), '--device', 'cpu'])
    assert done.returncode == 0, done.stderr[-3000:]
    assert order == ['start 0 demo_exists=False', 'end 0', 'start 1 demo_exists=True', 'end 1'], order


def test_under_torchrun_a_failure_of_rank_0_stops_every_rank_with_its_one_line(tmp_path):
    (tmp_path / 'data' / 'beauty').mkdir(parents=True)  # empty: no P5 files
    done, order = torchrun_probe(tmp_path, ['--dataset_code', 'beauty', '--data_root', str(tmp_path / 'data'),
                                            '--export_root', str(tmp_path / 'run'), '--device', 'cpu'])
    assert done.returncode != 0
    assert order == ['start 0 demo_exists=False']  # rank 1 never read the data
    errors = [line for line in done.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and 'is missing' in errors[0], done.stderr[-3000:]
