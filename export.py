"""Cut one size out of a trained run and save it as a standalone, deployable model file.

    python export.py --export_root RUN --size 64 --out model_64.pt
    python export.py --export_root RUN --size 64 --out model_64.pt --keep_features
    python export.py --export_root RUN --size all          # every size, into RUN/exports/

The file holds only what the size-s model uses (model/slicing.py): the leading blocks of every
nested layer, the item table precomputed at size s (or, with --keep_features, the first s rows of
the projection plus the frozen feature table), the item id -> ASIN map and titles, and the
configuration that rebuilds it. `load_export(path)` needs neither the run's checkpoint nor the data.
"""
import argparse
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from datasets.demo import DEMO_CODE, ensure_demo
from datasets.features import FeatureTableError
from datasets.p5 import DataError, load_p5, read_meta
from eval import run_args
from model.fmrlrec import FMRLRec
from model.slicing import SizeError, item_table_at, model_options, size_position, sliced_state_dict
from trainer.setup import build_model, dataset_dir, load_features, modality_name
from trainer.testing import CheckpointError, load_checkpoint, load_model_weights, non_finite_names, read_run_config
from trainer.trainer import BEST_CHECKPOINT
from utils.io import DiskFullError, atomic_write_bytes

EXPORT_FORMAT = 'fmrlrec-export'
EXPORT_VERSION = 2  # 2: 'item_id_embedding' (hybrid models exported with --keep_features)
META_FILE = 'meta.json.gz'
SUMMARY_COLUMNS = ('Recall@5', 'NDCG@5', 'Recall@10', 'NDCG@10', 'Recall@20', 'NDCG@20')


class ExportError(RuntimeError):
    """A file that is not a readable fMRLRec export."""


# What loading a run for export can raise with a message meant for the user.
RUN_ERRORS = (CheckpointError, SizeError, DataError, FeatureTableError)


@dataclass
class Catalogue:
    asins: list                 # index = item id; '' at 0 (padding)
    titles: list = None         # index = item id; None where unknown; None altogether without metadata


@dataclass
class ExportedModel:
    model: FMRLRec              # the size-s model, eval mode, dropout 0
    item_table: torch.Tensor    # (N + 1, s): what the model embeds inputs with and scores against
    size: int
    max_len: int
    asins: list
    titles: list
    info: dict = field(default_factory=dict)  # the file's configuration, source run and metrics


def read_catalogue(data_dir, id2item, num_items):
    """ASINs from the datamaps and titles from meta.json.gz when the dataset has one."""
    asins = [''] + [id2item[i] for i in range(1, num_items + 1)]
    meta_path = Path(data_dir) / META_FILE
    if not meta_path.exists():
        return Catalogue(asins, None)
    meta = read_meta(meta_path)
    titles = [None] + [meta.get(asin, {}).get('title') for asin in asins[1:]]
    return Catalogue(asins, [None if t is None else str(t) for t in titles])


def load_run(export_root, data_root=None):
    """(run configuration, SequenceData, full model with the best checkpoint's weights, eval mode)."""
    args = run_args(export_root, {'data_root': data_root})
    if args.dataset_code == DEMO_CODE:
        ensure_demo(dataset_dir(args), seed=0)
    data = load_p5(dataset_dir(args))
    model = build_model(args, data.num_items, load_features(args, data.num_items))
    checkpoint_path = Path(export_root) / 'models' / BEST_CHECKPOINT
    load_model_weights(model, load_checkpoint(checkpoint_path, 'cpu'), checkpoint_path)
    return args, data, model.eval()


def run_metrics(export_root, size):
    """The run's test metrics at `size` (empty when the run was not tested)."""
    path = Path(export_root) / 'test_mrl_metrics.json'
    return json.loads(path.read_text()).get(str(size), {}) if path.exists() else {}


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


def export_run(export_root, size, data_root=None, keep_features=False, loaded=None):
    """build_export for a run folder; `loaded` = load_run's result, to reuse it across sizes."""
    args, data, model = loaded if loaded is not None else load_run(export_root, data_root)
    catalogue = read_catalogue(data.data_dir, data.id2item, data.num_items)
    return build_export(model, size, catalogue, args.lru_max_len, keep_features, run_source(export_root, args),
                        run_metrics(export_root, size))


def run_source(export_root, args):
    """Where an export comes from, stored in the file for the record."""
    return {'run': str(export_root), 'dataset_code': args.dataset_code, 'features': modality_name(args),
            'text_encoder': args.language_encoder if args.use_language_encoder else '',
            'image_encoder': args.img_encoder if args.use_img_encoder else ''}


def check_run_size(export_root, size):
    """SizeError unless `size` is one of the run's sizes, read from args.yaml (no model loading)."""
    size_position(read_run_config(export_root)['mrl_hidden_sizes'], size)


def load_run_size(export_root, size, data_root=None, device='cpu'):
    """The size-`size` model of a run, exactly as its export file would load."""
    check_run_size(export_root, size)
    return model_from_export(export_run(export_root, size, data_root), device,
                             source=Path(export_root) / 'models' / BEST_CHECKPOINT)


def export_bytes(bundle):
    """The file's bytes. Saved through memory so that the archive's internal name, hence the size,
    does not depend on the (temporary) file name."""
    buffer = io.BytesIO()
    torch.save(bundle, buffer)
    return buffer.getvalue()


def serialized_size(bundle):
    """Bytes the export takes on disk."""
    return len(export_bytes(bundle))


def size_summary(model, catalogue, max_len, by_size, source=None, columns=SUMMARY_COLUMNS):
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
        raise ExportError(f'{path} is not a readable fMRLRec export ({type(error).__name__}). '
                          f'A training checkpoint is not an export: cut one with export.py.') from None
    if not isinstance(bundle, dict) or bundle.get('format') != EXPORT_FORMAT:
        raise ExportError(f'{path} is not an fMRLRec export (a training checkpoint? use '
                          f'`python recommend.py --export_root RUN --size S` for run folders).')
    if bundle.get('version', 0) > EXPORT_VERSION:
        raise ExportError(f'{path} was written by a newer export format (version {bundle["version"]}); '
                          f'update this code.')
    return bundle


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


def parse_export_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--export_root', required=True, help='a run folder made by train.py')
    p.add_argument('--size', required=True, help="one of the run's nested sizes, or 'all'")
    p.add_argument('--out', default=None, help='output file (default RUN/exports/model_<size>.pt); '
                   "with --size all, a folder (default RUN/exports)")
    p.add_argument('--keep_features', action='store_true', help='store the projection and the frozen '
                   'features instead of the precomputed item table (larger unless s > feature width)')
    p.add_argument('--data_root', default=None, help="override the run's --data_root")
    return p.parse_args(argv)


def main(argv=None):
    options = parse_export_args(sys.argv[1:] if argv is None else argv)
    root = Path(options.export_root)
    try:
        run_sizes = read_run_config(root)['mrl_hidden_sizes']  # check --size before the slow loading
        sizes = run_sizes if options.size == 'all' else [_size_argument(options.size, run_sizes)]
        if options.size != 'all' and options.out and Path(options.out).is_dir():
            raise ExportError(f'--out {options.out} is a folder; give a file name such as '
                              f'{Path(options.out) / f"model_{sizes[0]}.pt"} (--size all writes into a folder)')
        loaded = load_run(root, options.data_root)
        written = []
        for size in sizes:
            if options.size == 'all':
                out = Path(options.out or root / 'exports') / f'model_{size}.pt'
            else:
                out = Path(options.out or root / 'exports' / f'model_{size}.pt')
            bundle = export_run(root, size, keep_features=options.keep_features, loaded=loaded)
            check_finite(bundle, root / 'models' / BEST_CHECKPOINT)
            _write_export(out, bundle)
            print(f'wrote {out}: size {size}, {parameter_total(bundle):,} numbers of model state '
                  f'({bundle["item_input"]}), {out.stat().st_size / 1e6:.3f} MB')
            written.append(out)
        return written
    except RUN_ERRORS + (ExportError,) as error:
        raise SystemExit(f'error: {error}') from None


def _write_export(out, bundle):
    """Write atomically; ExportError in one line when the file cannot be written (the old one stays)."""
    try:
        atomic_write_bytes(out, export_bytes(bundle))
    except DiskFullError as error:
        raise ExportError(f'{error.strerror}; nothing was written. Free some space or choose another --out.') from None
    except OSError as error:
        raise ExportError(f'cannot write {out}: {error.strerror or error} ({error.filename or out}). Choose another '
                          f'--out, a file in a folder you can write.') from None


def _size_argument(text, sizes):
    try:
        size = int(text)
    except ValueError:
        raise SizeError(f"--size must be an integer or 'all', got {text!r}") from None
    size_position(sizes, size)  # raises with the list of valid sizes
    return size


if __name__ == '__main__':
    main()
