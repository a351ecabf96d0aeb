"""torchrun with DistributedDataParallel on CPU (gloo): 2 processes train like 1 with the same global
batch, evaluation sharded over ranks equals the 1-process evaluation exactly, and a 2-process run
killed mid-epoch resumes under torchrun. DDP's keywords fit the installed torch's DDP (older ones
are stood in for)."""
import csv
import inspect
import json
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import eval as eval_script
from evaluation.sharded import assemble_shards, shard_indices
from model import fp32_matmul
from model import FMRLRec
from tests.conftest import ROOT
from trainer import distributed
from trainer.distributed import ProcessGroup, local_share

EPOCHS = 2
USERS = 1200  # the demo
# Dropout off: with it, each rank draws its own masks and 1 and 2 processes differ by randomness.
OPTIONS = ['--dataset_code', 'demo', '--num_epochs', str(EPOCHS), '--mrl_hidden_sizes', '8,16',
           '--train_batch_size', '128', '--val_batch_size', '256', '--test_batch_size', '256', '--lr', '1e-3',
           '--lru_dropout', '0', '--lru_attn_dropout', '0', '--no-use_tensorboard', '--device', 'cpu']
# 1 and 2 processes sum the same numbers in a different order (~1e-7 per step); a metric may then
# move by the weight of a user or two whose target sits on a near-tie.
METRIC_TOLERANCE = 2 / USERS
LOSS_TOLERANCE = 1e-5  # relative, per epoch


def launch(argv, processes, fault=None):
    # One fp32 product library in every process: the oneDNN route is probed per process, and on a
    # busy machine two processes can choose differently (docs/resume.md, Determinism).
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', fp32_matmul.DISABLE_ENV: '1'}
    env.pop('FMRLREC_FAULT', None)
    if fault:
        env['FMRLREC_FAULT'] = fault
    prefix = [sys.executable]
    if processes > 1:
        prefix += ['-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={processes}']
    return subprocess.run(prefix + ['train.py', *map(str, argv)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def epochs(run):
    with open(run / 'logs' / 'logs.csv', newline='') as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope='module')
def runs(demo_root, tmp_path_factory):
    base = tmp_path_factory.mktemp('ddp')
    single, double = base / 'single', base / 'double'
    options = OPTIONS + ['--data_root', demo_root]
    done = launch(options + ['--export_root', single], processes=1)
    assert done.returncode == 0, done.stderr[-3000:]
    killed = launch(options + ['--export_root', double], processes=2, fault='kill_at_step=15')
    assert killed.returncode != 0 and not (double / 'test_mrl_metrics.json').exists(), killed.stderr[-3000:]
    resumed = launch(['--resume', double], processes=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed' in resumed.stdout and 'x 2 processes' in resumed.stdout
    return single, double


def test_two_processes_train_like_one_with_the_same_global_batch(runs):
    single, double = runs
    one, two = epochs(single), epochs(double)
    assert [r['step'] for r in two] == [r['step'] for r in one] == ['10', '20']  # rank 0 logged, once
    for a, b in zip(one, two):
        assert abs(float(a['train_loss']) - float(b['train_loss'])) <= LOSS_TOLERANCE * float(a['train_loss'])
    metrics_one = json.loads((single / 'test_mrl_metrics.json').read_text())
    metrics_two = json.loads((double / 'test_mrl_metrics.json').read_text())
    for size, values in metrics_one.items():
        for name, value in values.items():
            assert abs(metrics_two[size][name] - value) <= METRIC_TOLERANCE, (size, name)


def test_sharded_test_evaluation_equals_one_process_exactly(runs, monkeypatch):
    _, double = runs
    monkeypatch.setattr(fp32_matmul, 'use_onednn_fp32', lambda: False)  # as in the workers
    sharded = json.loads((double / 'test_mrl_metrics.json').read_text())
    sharded_by_popularity = json.loads((double / 'test_mrl_metrics_by_popularity.json').read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers, so that the scores are computed alike
    try:
        assert eval_script.main(['--export_root', str(double), '--device', 'cpu', '--force']) == sharded
    finally:
        torch.set_num_threads(threads)
    # the gathered ranks give the same per-bucket metrics as one process
    assert json.loads((double / 'test_mrl_metrics_by_popularity.json').read_text()) == sharded_by_popularity


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 300), st.integers(1, 40), st.integers(1, 5))
def test_evaluation_shards_cover_every_user_once_in_whole_batches(users, batch_size, world_size):
    shards = [shard_indices(users, batch_size, rank, world_size) for rank in range(world_size)]
    assert sorted(torch.cat(shards).tolist()) == list(range(users))
    for rank, shard in enumerate(shards):
        for start in range(0, len(shard), batch_size):  # each rank's own batches are original batches
            first = int(shard[start])
            assert first % batch_size == 0 and (first // batch_size) % world_size == rank
            assert shard[start:start + batch_size].tolist() == list(range(first, min(first + batch_size, users)))
    ranks = torch.arange(users).repeat(2, 1) * 10
    padded = [torch.cat([ranks[:, s], torch.full((2, 3), -1)], dim=1) for s in shards]
    assert torch.equal(assemble_shards(padded, users, batch_size), ranks)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40), st.integers(1, 4), st.integers(0, 2 ** 16))
def test_a_global_batch_is_split_into_shares_that_add_up(batch, world_size, seed):
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.rand(50, 6, generator=generator) > 0.5).long()
    labels[:, -1] = 1  # every example has a label, as in training
    global_indices = torch.randperm(50, generator=generator)[:batch]
    pieces = [local_share(global_indices, labels, ProcessGroup(rank, world_size)) for rank in range(world_size)]
    real = [indices for indices, scale, _ in pieces if scale > 0]
    assert sorted(torch.cat(real).tolist()) == sorted(global_indices.tolist())
    assert sum(share for *_, share in pieces) == pytest.approx(1.0)
    assert sum(scale for _, scale, _ in pieces) == pytest.approx(world_size)
    for indices, scale, share in pieces:
        assert len(indices) >= 1 and scale == pytest.approx(world_size * share)


# ---- DDP's keywords on every supported torch ---------------------------------------------------
class RecordingDDP:
    """Stands in for DistributedDataParallel: records the keywords it was built with."""
    built = []

    def __init__(self, module, **options):
        self.module = module
        RecordingDDP.built.append(options)


class DDPBefore213(RecordingDDP):
    """DDP's signature before forward_sync_buffers (torch 2.4 to 2.12): any other keyword is a TypeError."""

    def __init__(self, module, device_ids=None, output_device=None, dim=0, broadcast_buffers=True,
                 process_group=None, bucket_cap_mb=None, find_unused_parameters=False, check_reduction=False,
                 gradient_as_bucket_view=False, static_graph=False):
        super().__init__(module, device_ids=device_ids, broadcast_buffers=broadcast_buffers,
                         static_graph=static_graph)


class DDPFrom213(RecordingDDP):
    """DDP's signature with forward_sync_buffers (torch 2.13 on; broadcast_buffers deprecated)."""

    def __init__(self, module, device_ids=None, output_device=None, dim=0, broadcast_buffers=None,
                 init_sync=True, process_group=None, static_graph=False, forward_sync_buffers=None):
        super().__init__(module, device_ids=device_ids, broadcast_buffers=broadcast_buffers,
                         static_graph=static_graph, forward_sync_buffers=forward_sync_buffers)


@pytest.fixture
def ddp_stand_in(monkeypatch):
    """(install(DDP class), the buffers broadcast by hand): wrap_model for rank 0 of 2 on the CPU."""
    RecordingDDP.built = []
    broadcast = []
    monkeypatch.setattr(distributed.dist, 'broadcast', lambda tensor, src: broadcast.append((tensor, src)))

    def install(ddp_class):
        monkeypatch.setattr(distributed, 'DistributedDataParallel', ddp_class)
    return install, broadcast


def small_model():
    torch.manual_seed(0)
    features = torch.randn(11, 4)
    return FMRLRec(10, [8, 16], text_features=features, image_features=features)


def test_ddp_without_forward_sync_buffers_gets_broadcast_buffers_and_the_buffers_once(ddp_stand_in):
    install, broadcast = ddp_stand_in
    install(DDPBefore213)
    model = small_model()
    wrapped = distributed.wrap_model(model, ProcessGroup(0, 2), torch.device('cpu'))
    assert isinstance(wrapped, DDPBefore213) and wrapped.module is model
    assert RecordingDDP.built == [{'device_ids': None, 'broadcast_buffers': False, 'static_graph': True}]
    # that switch also skips DDP's own sync at the start: the feature table is sent once, from rank 0
    assert [(tensor.data_ptr(), src) for tensor, src in broadcast] == [(model.item_features.data_ptr(), 0)]


def test_ddp_with_forward_sync_buffers_gets_that_keyword_alone(ddp_stand_in):
    install, broadcast = ddp_stand_in
    install(DDPFrom213)
    distributed.wrap_model(small_model(), ProcessGroup(1, 2), torch.device('cpu'))
    assert RecordingDDP.built == [{'device_ids': None, 'broadcast_buffers': None, 'static_graph': True,
                                   'forward_sync_buffers': False}]
    assert broadcast == []  # DDP sends them itself at construction


def test_the_installed_torchs_ddp_accepts_the_chosen_keywords():
    options = distributed.ddp_buffer_options()
    signature = inspect.signature(distributed.DistributedDataParallel.__init__)
    signature.bind(None, torch.nn.Linear(2, 2), device_ids=None, static_graph=True, **options)
    assert options in ({'forward_sync_buffers': False}, {'broadcast_buffers': False})
