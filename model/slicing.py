"""Cut the size-s model out of a trained FMRLRec, and count the parameters of nested and dense models.

Slicing rests on the nesting property: the size-s model is an FMRLRec built with sizes
[s_1..s_k] (s_k = s), and each of its tensors is the LEADING BLOCK of the same-named tensor of the
full model: the whole per-chunk weights of the first k chunks of every MRL linear, the first k
chunk LayerNorms, the first s columns of `params_log`, the first s rows of the projection (or the
first s columns of the ID table). The exactness tests (tests/test_export.py) guard this.

Parameter counts (see docs/deploy.md for the definitions):
- 'stored': what the modules hold, every real number counted once (complex weights are two
  real tensors; MRL linears store only their block-lower-triangular chunks); includes the
  projection (or ID table), biases, LayerNorms and the LRU's `params_log`. Equals
  `sum(p.numel() for p in model.parameters())`.
- 'paper': the convention that reproduces the paper's Figure 4: the five linear maps of each
  block as dense s x s matrices, a complex entry counted once (torch's `numel` of a cfloat
  tensor), weights only (no projection, biases, LayerNorms or LRU eigenvalue parameters).
"""
import torch

from model.fmrlrec import FMRLRec

CONVENTIONS = ('stored', 'paper')
LINEARS_PER_BLOCK = 5  # LRU in_proj and out_proj (complex), FFN gate, w_1, w_2


class SizeError(ValueError):
    """A size that is not one of the model's nested sizes."""


def size_position(sizes, size):
    """Number of chunks k of the size-`size` model, i.e. 1 + the index of `size` in `sizes`."""
    sizes = [int(s) for s in sizes]
    try:
        return sizes.index(int(size)) + 1
    except (ValueError, TypeError):
        raise SizeError(f'size {size!r} is not one of the nested sizes of this model: '
                        f'{",".join(str(s) for s in sizes)}. Only those can be cut out.') from None


def model_options(model):
    """The constructor options of an FMRLRec that decide its parameter shapes and its inference."""
    block = model.blocks[0]
    return {'num_blocks': len(model.blocks), 'bias': block.lru.in_proj.bias is not None,
            'dropout': model.embed_dropout.p, 'attn_dropout': block.lru.dropout.p,
            'item_id_embedding': model.is_hybrid}


def leading_blocks(full_state, shapes):
    """{name: full_state[name][:n_0, :n_1, ...]} for every (name, shape) in `shapes`, as fresh copies.

    Copies, not views: `torch.save` of a view writes the whole underlying storage.
    """
    sliced = {}
    for name, shape in shapes.items():
        if name not in full_state:
            raise KeyError(f'the full model has no tensor {name!r}; it does not nest the requested model')
        tensor = full_state[name]
        if tensor.dim() != len(shape) or any(n > m for n, m in zip(shape, tensor.shape)):
            raise ValueError(f'{name}: cannot cut a {tuple(shape)} block out of a {tuple(tensor.shape)} tensor')
        sliced[name] = tensor[tuple(slice(0, n) for n in shape)].detach().clone()
    return sliced


def sub_model(model, size, with_features=True, dropout=0.0, attn_dropout=0.0):
    """A fresh (untrained) FMRLRec of the size-`size` shape of `model`, on the CPU.

    with_features=False builds the ID-table variant whatever `model` is (it then holds a
    precomputed item table). Dropout defaults to 0: the result is for inference.
    """
    k = size_position(model.sizes, size)
    options = model_options(model)
    features = model.item_features if with_features else None
    if features is not None:
        features = features.detach().cpu()
    return FMRLRec(model.num_items, model.sizes[:k], text_features=features, num_blocks=options['num_blocks'],
                   dropout=dropout, attn_dropout=attn_dropout, bias=options['bias'],
                   item_id_embedding=options['item_id_embedding'] and features is not None)


def sliced_state_dict(model, size):
    """The state dict of the size-`size` model: leading blocks of `model`'s tensors, same names."""
    k = size_position(model.sizes, size)
    with torch.device('meta'):  # only the shapes are needed: build the template without memory
        features = None if model.item_features is None else torch.empty(model.item_features.shape)
        template = FMRLRec(model.num_items, model.sizes[:k], text_features=features,
                           num_blocks=len(model.blocks), bias=model_options(model)['bias'],
                           item_id_embedding=model.is_hybrid)
    shapes = {name: tensor.shape for name, tensor in template.state_dict().items()}
    return leading_blocks(model.state_dict(), shapes)


def slice_model(model, size):
    """The size-`size` model of `model` as a standalone FMRLRec (eval mode, dropout 0, CPU)."""
    small = sub_model(model, size)
    small.load_state_dict(sliced_state_dict(model, size))
    return small.eval()


@torch.no_grad()
def item_table_at(model, size):
    """The (N + 1, size) item table of the size-`size` model (row 0: padding, the projection's bias)."""
    size_position(model.sizes, size)
    was_training = model.training
    model.eval()
    table = model.item_table()[:, :size].detach().cpu().clone()
    model.train(was_training)
    return table


# ---- parameter counts --------------------------------------------------------------------------

def triangular_weight_count(sizes):
    """Entries of one block-lower-triangular MRL weight: sum over chunks of c_k * s_k."""
    sizes = [int(s) for s in sizes]
    return sum((s - prev) * s for prev, s in zip([0] + sizes[:-1], sizes))


def parameter_count(sizes, num_blocks, feature_dim=None, num_items=None, bias=True, convention='stored',
                    id_table=False):
    """Parameters of an FMRLRec with nested sizes `sizes` (width sizes[-1]).

    feature_dim: input width of the projection (d_text + d_image); None for the ID-only model,
    whose (num_items + 1, width) ID table is counted instead. With both and `id_table=True`, the
    hybrid: projection and ID table. A dense model of width s is the one-chunk case `sizes=[s]`.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f'convention must be one of {CONVENTIONS}, got {convention!r}')
    sizes = [int(s) for s in sizes]
    width = sizes[-1]
    if convention == 'paper':
        return num_blocks * LINEARS_PER_BLOCK * width * width
    if feature_dim is None and num_items is None:
        raise ValueError('give feature_dim (feature models) or num_items (ID-only models)')
    if id_table and (feature_dim is None or num_items is None):
        raise ValueError('a hybrid model (id_table=True) needs both feature_dim and num_items')
    items = feature_dim * width + width if feature_dim is not None else (num_items + 1) * width
    if id_table:
        items += (num_items + 1) * width
    linear = triangular_weight_count(sizes) + (width if bias else 0)
    per_block = (2 * 2 * width           # two chunked LayerNorms, weight and bias
                 + 3 * width             # params_log: nu, theta, gamma
                 + 2 * 2 * linear        # complex in_proj and out_proj: real and imaginary parts
                 + 3 * linear)           # FFN gate, w_1, w_2
    return items + num_blocks * per_block


def nested_and_independent(sizes, num_blocks, feature_dim=None, num_items=None, bias=True, convention='stored',
                           id_table=False):
    """Per size s: the nested slice of width s, a dense model of width s, and the sum of dense
    models of every size up to s (what training each size separately would cost)."""
    rows, cumulative = [], 0
    for k, size in enumerate(sizes, start=1):
        options = dict(num_blocks=num_blocks, feature_dim=feature_dim, num_items=num_items, bias=bias,
                       convention=convention, id_table=id_table)
        nested = parameter_count(sizes[:k], **options)
        independent = parameter_count([size], **options)
        cumulative += independent
        rows.append({'size': int(size), 'nested': nested, 'independent': independent,
                     'independent_cumulative': cumulative, 'saving': 1.0 - nested / cumulative})
    return rows
