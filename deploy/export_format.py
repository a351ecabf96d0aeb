"""The export file: one size of a trained run as a standalone model (format 'fmrlrec-export').

The file holds only what the size-s model uses (model/slicing.py): the leading blocks of every
nested layer, the item table precomputed at size s (or, with keep_features, the first s rows of
the projection plus the frozen feature table), the item id -> ASIN map and titles, and the
configuration that rebuilds it. `load_export(path)` needs neither the run's checkpoint nor the data.
"""
import io
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from evaluation.final_evaluation import non_finite_names
from model.fmrlrec import FMRLRec
from model.slicing import item_table_at, model_options, size_position, sliced_state_dict
from utils.io import DiskFullError, atomic_write_bytes
from utils.report import SIZE_TABLE_COLUMNS

EXPORT_FORMAT = 'fmrlrec-export'
EXPORT_VERSION = 2  # 2: 'item_id_embedding' (hybrid models exported with --keep_features)


class ExportError(RuntimeError):
    """A file that is not a readable fMRLRec export."""


@dataclass
class ExportedModel:
    model: FMRLRec              # the size-s model, eval mode, dropout 0
    item_table: torch.Tensor    # (N + 1, s): what the model embeds inputs with and scores against
    size: int
    max_len: int
    asins: list
    titles: list
    info: dict = field(default_factory=dict)  # the file's configuration, source run and metrics


def build_export(model, size, catalogue, max_len, keep_features=False, source=None, metrics=None):
    """The export of the size-`size` model of `model` as a dict of tensors and plain values."""
    k = size_position(model.sizes, size)
    state = sliced_state_dict(model, size)
    features = None
    if model.item_features is None:
        item_input = 'id_table'  # the sliced ID table already is the item table at this size
    elif keep_features:
        item_input = 'features'
        features = model.item_features.detach().cpu().clone()
    else:
        # Held as the ID table of an ID-mode FMRLRec; row 0 is the projection's bias, kept as is.
        item_input = 'table'
        state = {name: t for name, t in state.items() if not name.startswith('projection.')}
        state['id_embedding.weight'] = item_table_at(model, size)
    options = model_options(model)
    return {
        'format': EXPORT_FORMAT, 'version': EXPORT_VERSION,
        'size': int(size), 'sizes': [int(s) for s in model.sizes[:k]],
        'full_sizes': [int(s) for s in model.sizes], 'num_items': int(model.num_items),
        'num_blocks': options['num_blocks'], 'bias': options['bias'], 'max_len': int(max_len),
        'item_id_embedding': bool(options['item_id_embedding'] and item_input == 'features'),
        'item_input': item_input, 'state_dict': state, 'item_features': features,
        'asins': list(catalogue.asins), 'titles': None if catalogue.titles is None else list(catalogue.titles),
        'source': dict(source or {}), 'metrics': {k: float(v) for k, v in (metrics or {}).items()},
    }


def export_bytes(bundle):
    """The file's bytes. Saved through memory so that the archive's internal name, hence the size,
    does not depend on the (temporary) file name."""
    buffer = io.BytesIO()
    torch.save(bundle, buffer)
    return buffer.getvalue()


def write_export(out, bundle):
    """Write the export file atomically: a failed write (ExportError, one line) leaves the old file as it was."""
    try:
        atomic_write_bytes(out, export_bytes(bundle))
    except DiskFullError as error:
        raise ExportError(f'{error.strerror}; nothing was written. Free some space or choose another --out.') from None
    except OSError as error:
        raise ExportError(f'cannot write {out}: {error.strerror or error} ({error.filename or out}). Choose another '
                          f'--out, a file in a folder you can write.') from None


def serialized_size(bundle):
    """Bytes the export takes on disk."""
    return len(export_bytes(bundle))


def size_summary(model, catalogue, max_len, by_size, source=None, columns=SIZE_TABLE_COLUMNS):
    """A markdown table: per size, the slice's parameters, the export file's size and the metrics."""
    names = [c for c in columns if c in next(iter(by_size.values()), {})]
    lines = ['| size | parameters | export file | ' + ' | '.join(names) + ' |',
             '|---:|---:|---:|' + '---:|' * len(names)]
    for size in model.sizes:
        parameters = sum(t.numel() for t in sliced_state_dict(model, size).values())
        metrics = by_size.get(str(size), {})
        file_bytes = serialized_size(build_export(model, size, catalogue, max_len, source=source, metrics=metrics))
        values = ' | '.join(f'{metrics[n]:.4f}' if n in metrics else '-' for n in names)
        lines.append(f'| {size} | {parameters:,} | {file_bytes / 1e6:.3f} MB | {values} |')
    return '\n'.join(lines)


def parameter_total(bundle):
    """Numbers the export holds as model state (the item table included, frozen features not)."""
    return sum(t.numel() for t in bundle['state_dict'].values())


def read_export(path):
    path = Path(path)
    if not path.exists():
        raise ExportError(f'{path} does not exist. Make it with `python export.py --export_root RUN '
                          f'--size S --out {path}`.')
    try:
        bundle = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # a truncated file, or a pickle that is not plain tensors and values
        raise ExportError(_unreadable(path, error)) from None
    if not isinstance(bundle, dict) or bundle.get('format') != EXPORT_FORMAT:
        raise ExportError(f'{path} is not an fMRLRec export (a training checkpoint? use '
                          f'`python recommend.py --export_root RUN --size S` for run folders).')
    if bundle.get('version', 0) > EXPORT_VERSION:
        raise ExportError(f'{path} was written by a newer export format (version {bundle["version"]}); '
                          f'update this code.')
    return bundle


def _unreadable(path, error):
    """Why torch cannot load `path` weights-only: a complete archive holding Python objects beyond
    tensors and plain values (a training checkpoint: RNG states), a truncated or damaged one, or no
    torch file at all. Only the first gets the checkpoint hint."""
    again = f'`python export.py --export_root RUN --size S --out {path}`'
    if isinstance(error, pickle.UnpicklingError) and zipfile.is_zipfile(path):
        return (f'{path} is not an fMRLRec export: it holds Python objects beyond tensors and plain values. A '
                f'training checkpoint is not an export: cut one with {again}, or serve the run folder with '
                f'`python recommend.py --export_root RUN --size S`.')
    with open(path, 'rb') as handle:
        head = handle.read(4)
    reason = (str(error).strip().splitlines() or [''])[0].split('. ')[0][:120]  # torch adds paragraphs of advice
    detail = f'{type(error).__name__}: {reason}' if reason else type(error).__name__
    if head in (b'', b'PK\x03\x04'):  # torch files are zip archives: this one ends early or is damaged
        return (f'{path} is truncated or damaged ({path.stat().st_size:,} bytes; {detail}). '
                f'export.py writes its files whole, so it was cut or damaged since (an interrupted copy?): copy it '
                f'again, or write it again with {again}.')
    return (f'{path} is not a readable fMRLRec export: not a file written by torch.save ({type(error).__name__}). '
            f'Make one with {again}.')


def check_finite(bundle, source):
    """ExportError when the size-s model's weights or features hold NaN or infinite values: such a
    model would rank items by NaN scores, so it is never served or written."""
    bad = non_finite_names({**bundle['state_dict'], 'item_features': bundle.get('item_features')})
    if bad:
        raise ExportError(f'{source}: the size-{bundle["size"]} model holds NaN or infinite values '
                          f'({", ".join(bad[:3])}{", ..." if len(bad) > 3 else ""}), so it cannot rank items. Export a '
                          f'checkpoint with finite weights (python eval.py --export_root RUN stops on one without).')


def model_from_export(bundle, device='cpu', source='the export'):
    """Rebuild the size-s model from an export dict; dropout is 0 and the model is in eval mode.
    Refuses (ExportError) a model with non-finite weights."""
    check_finite(bundle, source)
    with torch.random.fork_rng(devices=[]):  # the throwaway initialisation must not move the global RNG
        model = FMRLRec(bundle['num_items'], bundle['sizes'], text_features=bundle['item_features'],
                        num_blocks=bundle['num_blocks'], dropout=0.0, attn_dropout=0.0, bias=bundle['bias'],
                        item_id_embedding=bool(bundle.get('item_id_embedding', False)))
    model.load_state_dict(bundle['state_dict'])
    model = model.to(device).eval()
    with torch.no_grad():
        table = model.item_table().detach()
    info = {k: v for k, v in bundle.items() if k not in ('state_dict', 'item_features', 'asins', 'titles')}
    return ExportedModel(model, table, bundle['size'], bundle['max_len'], bundle['asins'], bundle['titles'], info)


def load_export(path, device='cpu'):
    return model_from_export(read_export(path), device, source=path)
