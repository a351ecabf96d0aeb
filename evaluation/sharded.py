"""Evaluation sharded over the processes of a torchrun job (docs/distributed.md); in one process, the
plain evaluation.

Each rank takes the users of batches i = rank mod N (which it re-batches by history length) and the
targets' ranks are gathered, so every rank computes the metrics from every user exactly once. They
equal one process's where the scores do: bit for bit on one CPU thread, up to the products' rounding
in general, which moves a rank only at a near-tie (docs/distributed.md).

`group` is this process's place among the processes (trainer/distributed.ProcessGroup): what is read
of it is enabled, rank, world_size and is_main.
"""
import torch
import torch.distributed as dist

from evaluation.evaluate import evaluate_ranks, metrics_from_ranks


def shard_indices(num_users, batch_size, rank, world_size):
    """The users of evaluation batches rank, rank + N, rank + 2N, ... (whole batches, in order)."""
    starts = range(rank * batch_size, num_users, world_size * batch_size)
    pieces = [torch.arange(start, min(start + batch_size, num_users)) for start in starts]
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)


def assemble_shards(shards, num_users, batch_size):
    """(M, U, ...) ranks in user order from each rank's (M, >= n_r, ...) shard (padding beyond n_r ignored)."""
    world_size = len(shards)
    full = shards[0].new_empty(shards[0].shape[0], num_users, *shards[0].shape[2:])
    for rank, shard in enumerate(shards):
        indices = shard_indices(num_users, batch_size, rank, world_size).to(shard.device)
        full[:, indices] = shard[:, :len(indices)]
    return full


def sharded_ranks(model, examples, num_sizes, batch_size, device, group, mask_history=False, amp='none',
                  description='eval'):
    """(M, U, 2) ranks of every user, each rank computing whole batches, gathered on every rank."""
    _, inputs, targets, histories = examples
    if not group.enabled:
        return evaluate_ranks(model, inputs, targets, histories, num_sizes, batch_size, device, mask_history,
                              amp, progress=True, description=description)
    mine = shard_indices(len(inputs), batch_size, group.rank, group.world_size)
    local = evaluate_ranks(model, inputs[mine], targets[mine], histories[mine], num_sizes, batch_size, device,
                           mask_history, amp, progress=group.is_main, description=description)
    longest = (len(inputs) + batch_size - 1) // batch_size
    longest = ((longest + group.world_size - 1) // group.world_size) * batch_size
    padded = local.new_zeros(num_sizes, longest, *local.shape[2:])
    padded[:, :local.shape[1]] = local
    shards = [torch.empty_like(padded) for _ in range(group.world_size)]
    dist.all_gather(shards, padded)
    return assemble_shards(shards, len(inputs), batch_size)


def sharded_evaluate(model, examples, sizes, ks, batch_size, device, group, mask_history=False, amp='none',
                     description='eval'):
    """{size: {metric: value}}, the same on every rank (how it compares with one process: module docstring)."""
    ranks = sharded_ranks(model, examples, len(sizes), batch_size, device, group, mask_history, amp, description)
    return metrics_from_ranks(ranks, sizes, ks)
