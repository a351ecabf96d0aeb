"""How FMRLRec computes quickly, gathered in one place; none of it changes what it computes.

The switches below choose between computations with the same result up to float rounding
(tests/test_fast_path.py pins every choice against model/reference.py). The defaults decide per
batch or per device; tests and benchmarks set them through `FMRLRec.set_fast_path`.
"""
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class FastPathSettings:
    """projected_chunks: how many leading chunks of the item table the training loss projects; the
    trailing ones are scored from the frozen features through their projection rows instead
    (model/nested_loss.py, "Factored tail"). None chooses per batch by cost; an int fixes it.

    fused_linears: every nested linear as one dense masked matmul (True), one matmul per chunk
    (False), or the per-device choice (None; see MRLLinear.use_fused).

    loss_item_chunk: catalogue columns per chunk of the training loss (model/chunked_loss.py, whose
    memory does not grow with the number of items); None chooses from the memory the unchunked
    loss would need (unchunked up to about 1 GB of log-probabilities)."""
    projected_chunks: Optional[int] = None
    fused_linears: Optional[bool] = None
    loss_item_chunk: Optional[int] = None


class AutocastCopy:
    """A frozen tensor in the autocast dtype, converted once and kept while autocast and the tensor
    stay the same: the (N + 1, d) feature table is then not converted again at every step (the
    values are those of a conversion each time). A plain object on the model: not saved in
    checkpoints, not moved by .to()."""

    def __init__(self):
        self.cached = None  # (key, copy)

    def of(self, tensor):
        """`tensor` itself outside autocast; its copy in the autocast dtype under it."""
        device_type = tensor.device.type
        if not torch.is_autocast_enabled(device_type):
            return tensor
        dtype = torch.get_autocast_dtype(device_type)
        key = (tensor.data_ptr(), tensor.device, dtype)
        if self.cached is None or self.cached[0] != key:
            self.cached = (key, tensor.to(dtype))
        return self.cached[1]
