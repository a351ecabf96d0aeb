"""Frozen image features (docs/method.md, Item features): each item's photo encoded by SigLIP through transformers.

    python -m datasets.image_features --data_dir data/beauty --image_root photos \
        [--img_encoder google/siglip-large-patch16-256] [--missing_image zero|error]

writes `<data_dir>/features/image_<encoder>.npy` (N x d, row i-1 = item id i, L2-normalised) and its
sidecar. The photo of item i is `<image_root>/<code>/<file>` with `<file>` the last component of
`item2img_dict.pkl[ASIN]` and `<code>` the data folder's name (or `--dataset_code`).

Photos are read and encoded batch by batch: at most one batch of images is in memory.

Missing-image policy (`--missing_image`), for items without a photo or whose file does not decode:
- `zero` (default): the item's row is all zeros, the count is printed, and the items are listed in
  `<table>.missing.tsv` next to the table. (The model then sees only the text for those items.)
- `error`: nothing is written; the run stops with the list (the released code's behaviour).
Either way, a run in which NO photo can be read stops with an error: that is a wrong
`--image_root`, not a few dead links.
"""
import argparse
import pickle
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from datasets.encoders import DEFAULT_IMG_ENCODER, EncoderError, load_failure
from datasets.features import add_build_options, build_output_path, feature_cache_path, save_feature_table
from datasets.p5 import DataError

MISSING_IMAGE_POLICIES = ('zero', 'error')


class MissingImagesError(RuntimeError):
    """Photos are missing or unreadable and the policy does not allow it; `.missing` lists them."""

    def __init__(self, message, missing):
        super().__init__(message)
        self.missing = missing


class ImageMapError(FileNotFoundError):
    """item2img_dict.pkl, the ASIN -> photo map, is missing or unreadable."""


def item_image_paths(data_dir, image_root='photos', dataset_code=None, num_items=None):
    """(ASINs, photo paths) in item-id order; the path is None for items without an image entry."""
    from datasets.text_features import dataset_item_ids
    data_dir = Path(data_dir)
    asins = dataset_item_ids(data_dir, num_items)
    code = dataset_code or data_dir.name
    item2img_path = data_dir / 'item2img_dict.pkl'
    build = 'Build it with python -m datasets.prepare (see docs/data.md) or train without images'
    if not item2img_path.exists():
        raise ImageMapError(f'{item2img_path} is missing: it maps ASINs to photo files. {build}.')
    try:
        item2img = pickle.loads(item2img_path.read_bytes())
    except Exception as error:  # a truncated or foreign file: pickle raises many types
        raise ImageMapError(f'{item2img_path} cannot be read ({type(error).__name__}: {error}). {build}.') from None
    if not isinstance(item2img, dict):
        raise ImageMapError(f'{item2img_path} holds a {type(item2img).__name__}, not an ASIN -> photo dict. {build}.')
    paths = [Path(image_root) / code / item2img[a].split('/')[-1] if a in item2img else None for a in asins]
    return asins, paths


def load_image_encoder(encoder, device='cpu'):
    """(model, image processor) from a model id or a local folder (transformers 4.x and 5.x)."""
    from transformers import AutoImageProcessor, AutoModel  # slow import: only when encoding
    try:
        model = AutoModel.from_pretrained(str(encoder)).to(device).eval()
        processor = AutoImageProcessor.from_pretrained(str(encoder))
    except (OSError, ValueError) as error:  # no network, no such model or folder: one line, not 80
        raise load_failure('image', encoder, error) from None
    return model, processor


def pooled_image_features(output):
    """The image embedding of `get_image_features`: a tensor in transformers 4.x, an output object
    (whose `pooler_output` is the embedding) in 5.x."""
    import torch
    if isinstance(output, torch.Tensor):
        return output
    for name in ('pooler_output', 'image_embeds'):
        value = getattr(output, name, None)
        if value is not None:
            return value
    raise TypeError(f'get_image_features returned {type(output).__name__} without pooler_output')


def open_rgb(path):
    """(RGB image, None) or (None, why it cannot be used)."""
    from PIL import Image
    if path is None:
        return None, 'no image for this item in item2img_dict.pkl'
    if not Path(path).is_file():
        return None, f'{path} does not exist'
    try:
        with Image.open(path) as image:
            return image.convert('RGB'), None  # convert() decodes fully, so broken files fail here
    except Exception as error:  # Pillow raises many types for broken files
        return None, f'{path} does not decode ({type(error).__name__}: {error})'


def encode_images(paths, model, processor, *, device='cpu', batch_size=64, progress=True, workers=4):
    """(table, missing): table is (len(paths), d) float32 with L2-normalised rows and zero rows for the
    photos that could not be read (None when none could); missing is [(index, reason)]."""
    import torch
    table, missing = None, []
    batches = range(0, len(paths), batch_size)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # decode photos in parallel with encoding
        for start in tqdm(batches, desc='image features', unit=' batch', disable=not progress):
            opened = list(pool.map(open_rgb, paths[start:start + batch_size]))
            rows = [start + k for k, (image, _) in enumerate(opened) if image is not None]
            missing += [(start + k, reason) for k, (image, reason) in enumerate(opened) if image is None]
            if not rows:
                continue
            inputs = processor(images=[image for image, _ in opened if image is not None], return_tensors='pt')
            with torch.inference_mode():
                output = model.get_image_features(pixel_values=inputs['pixel_values'].to(device))
                features = pooled_image_features(output).float()
                features = features / features.norm(p=2, dim=-1, keepdim=True).clamp_min(1e-12)
            if table is None:
                table = np.zeros((len(paths), features.shape[-1]), dtype=np.float32)
            table[rows] = features.cpu().numpy()
    return table, missing


def _write_missing_list(path, asins, paths, missing):
    lines = ['item_id\tasin\tpath\treason']
    lines += [f'{i + 1}\t{asins[i]}\t{paths[i] or ""}\t{reason}' for i, reason in missing]
    path.write_text('\n'.join(lines) + '\n')


def _missing_message(asins, missing, limit=20):
    shown = '\n'.join(f'  item {i + 1} ({asins[i]}): {reason}' for i, reason in missing[:limit])
    more = f'\n  ... and {len(missing) - limit} more' if len(missing) > limit else ''
    return f'{len(missing)} of {len(asins)} items have no usable photo:\n{shown}{more}'


def build_image_features(data_dir, encoder=DEFAULT_IMG_ENCODER, *, image_root='photos', dataset_code=None,
                         num_items=None, device='cpu', batch_size=64, missing_image='zero', out_path=None,
                         progress=True):
    """Encode the photos of a P5 folder and cache them; returns (path, info dict)."""
    if missing_image not in MISSING_IMAGE_POLICIES:
        raise ValueError(f'missing_image must be one of {MISSING_IMAGE_POLICIES}, got {missing_image!r}')
    started = time.perf_counter()
    asins, paths = item_image_paths(data_dir, image_root, dataset_code, num_items)
    out_path = Path(out_path) if out_path else feature_cache_path(data_dir, 'image', encoder)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    missing_list = out_path.with_suffix('.missing.tsv')
    absent = [(i, 'no image entry' if p is None else f'{p} does not exist')
              for i, p in enumerate(paths) if p is None or not p.is_file()]
    if absent and missing_image == 'error':  # fail before loading a large model
        _write_missing_list(missing_list, asins, paths, absent)
        raise MissingImagesError(f'{_missing_message(asins, absent)}\n(--missing_image error; full list in '
                                 f'{missing_list}; use --missing_image zero to encode them as zero rows)', absent)
    model, processor = load_image_encoder(encoder, device)
    table, missing = encode_images(paths, model, processor, device=device, batch_size=batch_size, progress=progress)
    if missing:
        _write_missing_list(missing_list, asins, paths, missing)
    if table is None:
        raise MissingImagesError(f'no photo could be read under {Path(image_root).resolve()}: check --image_root '
                                 f'and --dataset_code (expected files such as {paths[0]}).', missing)
    if missing and missing_image == 'error':
        raise MissingImagesError(f'{_missing_message(asins, missing)}\n(full list in {missing_list})', missing)
    if missing:
        print(f'image features: {len(missing):,} of {len(asins):,} items have no usable photo and get a zero '
              f'row (--missing_image zero); listed in {missing_list}')
    save_feature_table(out_path, table, encoder)
    seconds = time.perf_counter() - started
    print(f'wrote {out_path} ({table.shape[0]:,} x {table.shape[1]}) in {seconds:.1f} s')
    return out_path, {'items': len(asins), 'dim': int(table.shape[1]), 'missing': len(missing), 'seconds': seconds}


def build_parser():
    parser = argparse.ArgumentParser(prog='python -m datasets.image_features',
                                     description='Build the frozen image feature table of a P5 folder.')
    parser.add_argument('--data_dir', required=True, help='the P5 folder (datamaps.json, item2img_dict.pkl)')
    parser.add_argument('--img_encoder', default=DEFAULT_IMG_ENCODER, help='transformers model id or local folder')
    parser.add_argument('--image_root', default='photos', help='photos are in <image_root>/<code>/')
    parser.add_argument('--dataset_code', default=None, help='default: the name of --data_dir')
    parser.add_argument('--missing_image', choices=MISSING_IMAGE_POLICIES, default='zero',
                        help='zero: zero row + count in the log; error: stop with the list')
    return add_build_options(parser)


def main(argv=None):
    args = build_parser().parse_args(argv)
    out_path = build_output_path(args, 'image', args.img_encoder)
    try:
        build_image_features(args.data_dir, args.img_encoder, image_root=args.image_root,
                             dataset_code=args.dataset_code, device=args.device, batch_size=args.batch_size,
                             missing_image=args.missing_image, out_path=out_path, progress=not args.no_progress)
    except (MissingImagesError, EncoderError, ImageMapError, DataError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
