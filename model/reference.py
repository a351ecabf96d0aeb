"""The plain computation of fMRLRec, as the released code does it: the test oracle of the fast path.

It reads the parameters of an `FMRLRec` and computes every position of the (power-of-two padded)
sequence with per-chunk complex linears, per-size score matmuls over all positions, and the loss
over all labelled positions of the (M, B, L, N + 1) logits. Like the released code it projects the
whole item table once per call and the input tokens' features separately, with plain layers (no
oneDNN routing). Slow and memory-hungry by design; benchmarks/train_throughput.py times it.
"""
import torch
import torch.nn.functional as F

from model.lru import parallel_scan
from model.packing import next_power_of_two


def chunked_linear(layer, x, imag=False):
    """Per-chunk linear: output chunk k = W_k x[..., :s_k] + b_k, then concatenated."""
    weights = layer.weight_imag if imag else layer.weight
    biases = layer.bias_imag if imag else layer.bias
    return torch.cat([F.linear(x[..., :s], w, None if biases is None else biases[k])
                      for k, (s, w) in enumerate(zip(layer.sizes, weights))], dim=-1)


def complex_chunked_linear(layer, x):
    """The released complex layer: complex weights applied chunk by chunk to a complex input."""
    outs = []
    for k, s in enumerate(layer.sizes):
        weight = torch.complex(layer.weight[k], layer.weight_imag[k])
        out = x[..., :s] @ weight.t()
        if layer.bias is not None:
            out = out + torch.complex(layer.bias[k], layer.bias_imag[k])
        outs.append(out)
    return torch.cat(outs, dim=-1)


def chunked_layer_norm(norm, x):
    starts = [0]
    for width in norm.widths:
        starts.append(starts[-1] + width)
    return torch.cat([F.layer_norm(x[..., a:b], (b - a,), ln.weight, ln.bias, ln.eps)
                      for ln, a, b in zip(norm.norms, starts[:-1], starts[1:])], dim=-1)


def reference_lru(layer, x, mask):
    nu, theta, gamma = torch.exp(layer.params_log).split((1, 1, 1))
    lamb = torch.exp(torch.complex(-nu, theta))
    h = complex_chunked_linear(layer.in_proj, x.to(torch.cfloat)) * gamma
    h = parallel_scan(h, lamb.squeeze(0), mask)
    return layer.dropout(complex_chunked_linear(layer.out_proj, h).real)


def reference_block(block, x, mask):
    h = x + reference_lru(block.lru, chunked_layer_norm(block.input_norm, x), mask)
    ffn = block.feed_forward
    z = chunked_layer_norm(block.post_norm, h)
    gated = F.silu(chunked_linear(ffn.gate, z)) * ffn.dropout(chunked_linear(ffn.w_1, z))
    return h + ffn.dropout(chunked_linear(ffn.w_2, gated))


def reference_item_table(model):
    """(N + 1, D): the projection of every item's features with the plain linear layer (plus the
    ID table of a hybrid model)."""
    if model.projection is None:
        return model.id_embedding.weight
    projected = model.projection(model.item_features)
    return projected + model.id_embedding.weight if model.id_embedding is not None else projected


def reference_embed(model, tokens):
    """(B, L, D) input embeddings as the released code computes them: the projection of the
    tokens' own feature rows (an ID-only model looks its table up)."""
    if model.projection is None:
        return model.id_embedding.weight[tokens]
    projected = model.projection(model.item_features[tokens])
    return projected + model.id_embedding.weight[tokens] if model.id_embedding is not None else projected


def reference_hidden(model, tokens):
    """(B, L, D) outputs at every position of left-padded tokens (B, L)."""
    x = model.embed_dropout(reference_embed(model, tokens))
    mask = tokens > 0
    length = tokens.shape[1]
    pad = next_power_of_two(length) - length
    x = F.pad(x, (0, 0, pad, 0))
    mask = F.pad(mask, (pad, 0), value=False)
    for block in model.blocks:
        x = reference_block(block, x, mask)
    return x[:, -length:]


def reference_scores(model, tokens):
    """(M, B, L, N + 1): each size's logits at every position, one matmul per size, against the
    item table projected once per call (as the released model does)."""
    table = reference_item_table(model)
    hidden = reference_hidden(model, tokens)
    return torch.stack([hidden[..., :s] @ table[:, :s].t() for s in model.sizes])


def reference_loss(model, tokens, labels, reduction='sum'):
    """Per-size cross-entropy over every position with a label (label 0 ignored)."""
    scores = reference_scores(model, tokens)
    per_size = torch.stack([F.cross_entropy(s.reshape(-1, s.shape[-1]), labels.reshape(-1), ignore_index=0)
                            for s in scores])
    return (per_size.sum() if reduction == 'sum' else per_size.mean()), per_size.detach()


@torch.no_grad()
def reference_ranks(model, tokens, targets):
    """(M, B) 1-based rank of each target, the released way: all sizes' scores at every position
    (the item table projected again for this batch), the last position kept, padding item set to
    -inf, and a full descending sort of all items."""
    scores = reference_scores(model, tokens)[:, :, -1].clone()  # (M, B, N + 1)
    scores[..., 0] = float('-inf')
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    position = (order == targets.view(1, -1, 1)).int().argmax(dim=-1)
    return position + 1
