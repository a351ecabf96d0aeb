"""The random states a checkpoint carries: Python, NumPy, torch's CPU generator and the CUDA
generator of the GPU that trains, and their restoration on whatever device the run resumes on.

Only the training GPU's generator is saved, not get_rng_state_all(): a generator's state does not
depend on which GPU holds it, so a run moves exactly from cuda:0 to cuda:1 or from an 8-GPU machine
to a 1-GPU one. torch.set_rng_state and torch.cuda.set_rng_state take CPU byte tensors only, so
states are restored from CPU copies whatever map_location a checkpoint was read with.
"""
import random

import numpy as np
import torch


def rng_states(device):
    """Every random state the rest of a run depends on when it trains on `device`."""
    states = {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state()}
    if torch.device(device).type == 'cuda':
        states['cuda'] = torch.cuda.get_rng_state(device)
    return states


def _cpu_bytes(state):
    return state.to('cpu', torch.uint8)


def _gpu_index(device):
    return device.index if device.index is not None else torch.cuda.current_device()


def restore_rng_states(states, device, fallback_seed):
    """Restore `states` (from rng_states) for training on `device`. Returns None when the run
    continues exactly, else one line saying what could not be restored. A CUDA generator with no
    usable saved state is seeded with `fallback_seed`, so such a resumption is still reproducible."""
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(_cpu_bytes(states['torch']))
    device = torch.device(device)
    saved = states.get('cuda')
    if device.type != 'cuda':
        if saved is None:
            return None
        # An older checkpoint held GPU generators whenever CUDA was present, even for a CPU run.
        trained = 'if the run was trained on a GPU' if isinstance(saved, (list, tuple)) else 'the run was trained on a GPU'
        return (f'{trained} and resumes on the CPU: the data order is the same, but dropout now draws from '
                f'the CPU generator, so the run continues correctly, not bit for bit as on the GPU')
    index = _gpu_index(device)
    note = None
    if isinstance(saved, (list, tuple)):
        # Checkpoints written before this module saved every visible GPU's generator; the one this
        # process trained with sat at its own GPU index (LOCAL_RANK under torchrun).
        if index < len(saved):
            torch.cuda.set_rng_state(_cpu_bytes(saved[index]), index)
            return (f'the checkpoint holds the generators of {len(saved)} GPUs (an older format); restored '
                    f'that of GPU {index}, which is exact if the run trained on GPU {index}')
        note = (f'the checkpoint holds the generators of {len(saved)} GPUs (an older format), none for GPU '
                f'{index}')
        saved = None
    if saved is None:
        with torch.cuda.device(index):  # manual_seed seeds the current GPU, which may be another
            torch.cuda.manual_seed(fallback_seed)
        what = note or 'the run was trained on the CPU and resumes on a GPU'
        return (f'{what}: the CUDA generator of GPU {index} is seeded from (seed, rank, epoch), so dropout '
                f'draws new masks; the run continues correctly, not bit for bit')
    torch.cuda.set_rng_state(_cpu_bytes(saved), index)
    return None
