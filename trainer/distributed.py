"""Several processes, one model: `torchrun --nproc_per_node=N train.py ...` with PyTorch's
DistributedDataParallel (NCCL on CUDA, gloo on CPU). Without torchrun everything here is a no-op.

Semantics (docs/distributed.md):
- `--train_batch_size` is the GLOBAL batch. Each global batch of the epoch's (seed, epoch) order is
  cut into N nearly equal contiguous pieces, one per rank, so every user is seen once per epoch and
  the steps, the schedule and the batches are those of a 1-process run.
- Each rank's loss is weighted by N * (its labelled positions / the global batch's), so DDP's
  gradient average equals the gradient of the 1-process loss (the mean over all labelled positions).
- Evaluation is sharded over the same processes by evaluation/sharded.py.
"""
import inspect
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from utils.runtime import resolve_device


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def sum_(self, tensor):
        """In-place sum over ranks of a tensor on this rank's device."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_value(self, value, device):
        """Rank 0's float, on every rank (decisions taken from it are then the same everywhere)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(tensor, src=0)
        return tensor.item()

    def gather_objects(self, obj):
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        if not self.enabled:
            return [obj]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered


SINGLE_PROCESS = ProcessGroup()
# How long the other ranks wait for rank 0 to build the feature tables with an encoder: that can take
# far longer than the collectives' default timeout (10 minutes under NCCL).
MAIN_FIRST_TIMEOUT = timedelta(hours=24)


def launched_by_torchrun():
    return int(os.environ.get('WORLD_SIZE', '1')) > 1


def init_distributed(device_name):
    """(ProcessGroup, device). Under torchrun each process takes GPU LOCAL_RANK (NCCL), or the CPU
    (gloo) when CUDA is absent or --device cpu is asked for."""
    device = resolve_device(device_name)
    if not launched_by_torchrun():
        return SINGLE_PROCESS, device
    group = ProcessGroup(int(os.environ['RANK']), int(os.environ['WORLD_SIZE']), int(os.environ.get('LOCAL_RANK', 0)))
    if device.type == 'cuda':
        if group.local_rank >= torch.cuda.device_count():
            raise SystemExit(f'rank {group.rank}: LOCAL_RANK {group.local_rank} but only '
                             f'{torch.cuda.device_count()} GPUs; use --nproc_per_node <= the GPU count.')
        device = torch.device('cuda', group.local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group('nccl', device_id=device)
    else:
        dist.init_process_group('gloo')
    return group, device


def main_first(group, work):
    """work() on rank 0 first, then on the other ranks: what rank 0 builds and caches (the demo
    data, the feature tables), the others then only read, instead of all racing on the same files.
    If rank 0 fails, it raises its own error and the others stop with exit status 1 once rank 0 has
    gone (so that rank 0's message is out before torchrun stops the job)."""
    if not group.enabled:
        return work()
    # A CPU (gloo) group of its own, so that the wait has its own, long timeout on NCCL runs too.
    waiting = dist.new_group(backend='gloo', timeout=MAIN_FIRST_TIMEOUT)
    if group.is_main:
        try:
            result = work()
        except BaseException:
            _tell_others(waiting, False)
            raise
        _tell_others(waiting, True)  # the group is left to shutdown(): closing it now could cut the message
        return result
    if not _tell_others(waiting, None):
        try:
            dist.barrier(group=waiting)  # rank 0 never joins: this ends when rank 0's process does
        except RuntimeError:
            pass
        raise SystemExit(1)
    return work()


def _tell_others(waiting, succeeded):
    """Rank 0's `succeeded`, on every rank of `waiting`."""
    message = [succeeded]
    dist.broadcast_object_list(message, src=0, group=waiting)
    return message[0]


def shutdown(group):
    if group.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model, group, device):
    """DDP around `model` for training (evaluation and checkpoints use `model` itself).

    static_graph: every step uses the same parameters, and the LRU output map's imaginary bias
    never gets a gradient (Re(W h + b) ignores Im b); a static graph allows that without the
    per-step search of find_unused_parameters. The buffers are not sent before every step: the only
    one is the frozen feature table, identical on every rank (ddp_buffer_options); re-sending it
    would cost ~100 MB each time."""
    if not group.enabled:
        return model
    buffer_options = ddp_buffer_options()
    if 'broadcast_buffers' in buffer_options:  # this torch's DDP would not send them even once
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == 'cuda' else None,
                                   static_graph=True, **buffer_options)


def ddp_buffer_options():
    """DDP's keywords for "buffers once at the start, never before a step", on every supported torch.

    forward_sync_buffers=False (torch 2.13 on) says exactly that. Older DDP lacks the keyword (and
    would stop with a TypeError); there broadcast_buffers=False turns off both the per-step and the
    initial sync, so wrap_model sends the buffers itself once. From 2.13 on broadcast_buffers is
    deprecated, hence the choice by signature rather than one keyword for all versions."""
    if 'forward_sync_buffers' in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {'forward_sync_buffers': False}
    return {'broadcast_buffers': False}


# ---- training batches ----------------------------------------------------------------------
def local_share(global_indices, labels, group):
    """(this rank's indices, loss scale, loss share) for one global batch.

    share = this rank's labelled positions / the global batch's; scale = N * share undoes DDP's
    division by N. A rank left without examples (a final batch smaller than N) computes one
    example with weight 0, because every rank must take part in every gradient reduction."""
    if not group.enabled:
        return global_indices, 1.0, 1.0
    piece = torch.tensor_split(global_indices, group.world_size)[group.rank]
    if len(piece) == 0:
        return global_indices[:1], 0.0, 0.0
    total = int((labels[global_indices] > 0).sum())
    share = int((labels[piece] > 0).sum()) / max(1, total)
    return piece, group.world_size * share, share
