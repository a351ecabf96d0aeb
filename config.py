"""Command-line configuration of fMRLRec: the released code's options, same names and defaults.

`parse_args(argv)` builds the configuration; importing this module does nothing.
Booleans are real: `--flag`, `--flag True`, `--flag False` and `--no-flag` all work.
`--config FILE.yaml` reads options from a file; the command line wins (utils/config_file.py).
"""
import argparse
import math
import re
import subprocess
import time
from pathlib import Path

from datasets.cold_start import add_cold_start_options, cold_start_problem
from datasets.demo import DEMO_CODE, DEMO_ENCODER
from datasets.encoders import DEFAULT_IMG_ENCODER, DEFAULT_LANGUAGE_ENCODER
from datasets.image_features import MISSING_IMAGE_POLICIES
from datasets.item_text import parse_text_fields  # one parser for train.py and the feature builder
from utils.config_file import ConfigFileError, expand_config_argv, name_config_file
from utils.paper import PAPER_SIZES
from utils.retired_options import add_retired_options, pop_retired_options

DEFAULT_SIZES = ','.join(str(size) for size in PAPER_SIZES)
EXPERIMENT_ROOT = 'experiments'
DEMO_EPOCHS = 10  # the demo converges in a few epochs; keeps the default demo run under 2 minutes

EXAMPLES = """examples:
  python train.py --dataset_code demo                              # synthetic demo, < 2 min on 2 CPU cores
  python train.py --config presets/beauty.yaml                     # the paper's Beauty preset
  python train.py --config presets/beauty.yaml --lr 1e-3           # a preset, one option changed
  python train.py --dataset_code beauty --no-use_img_encoder       # text only (also --no-use_language_encoder)
  python train.py --resume RUN                                     # continue RUN with its own options
  python train.py --resume auto --export_root RUN --config F.yaml  # requeue-safe: continue RUN or start it
"""
_INTEGER = re.compile(r'[+-]?[0-9]+')  # ASCII digits only: int() also takes '1_6' and '١٦'
_TRUE = {'1', 'true', 't', 'yes', 'y', 'on'}
_FALSE = {'0', 'false', 'f', 'no', 'n', 'off'}


class ConfigError(ValueError):
    """An option value that cannot work, with the reason."""


def str2bool(text):
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f'expected a boolean (true/false), got {text!r}')


def _as_integer(value):
    """16 from '16', 16 or 16.0 (a saved config); None for anything else ('8.5', True, '1_6')."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    return None


def parse_sizes(text):
    """'8,16,32' -> [8, 16, 32]; strictly increasing positive integers, else ConfigError."""
    if isinstance(text, (list, tuple)):
        parts = list(text)
    else:
        parts = [p.strip() for p in str(text).split(',') if p.strip()]
    if not parts:
        raise ConfigError(f'--mrl_hidden_sizes is empty; give e.g. "{DEFAULT_SIZES}"')
    sizes = []
    for part in parts:
        size = _as_integer(part)
        if size is None:
            raise ConfigError(f'--mrl_hidden_sizes: {part!r} is not an integer')
        if size <= 0:
            raise ConfigError(f'--mrl_hidden_sizes: sizes must be positive, got {size}')
        if sizes and size <= sizes[-1]:
            raise ConfigError(f'--mrl_hidden_sizes must be strictly increasing, got {sizes[-1]} '
                              f'then {size} in {text!r}')
        sizes.append(size)
    return sizes


def _add_bool(parser, name, default, help_text):
    """`--name [BOOL]` plus `--no-name`, both writing the same destination."""
    parser.add_argument(f'--{name}', type=str2bool, nargs='?', const=True, default=default,
                        metavar='BOOL', help=f'{help_text}; --no-{name} turns it off')
    parser.add_argument(f'--no-{name}', dest=name, action='store_false', help=argparse.SUPPRESS)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows every option's default (unless it is None: the help says what happens then), and
    the examples as written."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser():
    p = argparse.ArgumentParser(description='fMRLRec: nested (Matryoshka) multimodal sequential '
                                            'recommenders trained at once.', epilog=EXAMPLES,
                                formatter_class=_HelpFormatter)
    p.add_argument('--config', metavar='FILE.yaml', default=argparse.SUPPRESS,
                   help='read options from a YAML file (option: value lines, as in a run\'s args.yaml; the '
                        "paper's presets are presets/<dataset>.yaml); options on the command line win")
    data = p.add_argument_group('data')
    data.add_argument('--dataset_code', type=str, default=DEMO_CODE,
                      help='beauty, clothing, sports, toys, or demo (a synthetic set made on first use)')
    data.add_argument('--data_root', type=str, default='data', help='folder holding <dataset_code>/')
    data.add_argument('--image_root', type=str, default='photos', help='folder holding <dataset_code>/*.jpg')
    data.add_argument('--feature_dir', type=str, default=None,
                      help='where the frozen feature tables are cached (default <data_root>/<dataset_code>/features); '
                           'set it when the data folder is read-only')
    add_retired_options(p)
    data.add_argument('--seed', type=int, default=42, help='initial weights, dropout and the data order')
    data.add_argument('--missing_image', type=str, default='zero', choices=MISSING_IMAGE_POLICIES,
                      help='items without a photo get a zero image feature, or stop with a list')
    data.add_argument('--text_fields', type=str, default='all',
                      help="the item text's fields: 'all' (title, price, brand, categories) or a comma "
                           "list such as 'title' (docs/content_features.md)")
    data.add_argument('--feature_preprocessing', type=str, default='none', choices=['none', 'centre', 'whiten'],
                      help='applied to each frozen feature table before the projection: as-is, mean-centred, '
                           'or whitened (docs/content_features.md)')

    add_cold_start_options(data, _add_bool)

    loader = p.add_argument_group('batches')
    loader.add_argument('--train_batch_size', type=int, default=32, help='global batch (split across torchrun processes)')
    loader.add_argument('--val_batch_size', type=int, default=64, help='users per validation batch')
    loader.add_argument('--test_batch_size', type=int, default=64, help='users per test batch')
    loader.add_argument('--num_workers', type=int, default=0, help='kept for compatibility; batches '
                        'are sliced from tensors in memory, no worker processes are needed')

    train = p.add_argument_group('training')
    train.add_argument('--device', type=str, default='auto', help='auto, cpu, cuda or cuda:N')
    train.add_argument('--num_epochs', type=int, default=None,
                       help='default 500 (the released code), 10 for the demo')
    train.add_argument('--optimizer', type=str, default='AdamW', choices=['AdamW', 'Adam'], help='biases get no weight decay')
    train.add_argument('--weight_decay', type=float, default=0.01, help='AdamW weight decay')
    train.add_argument('--adam_epsilon', type=float, default=1e-9, help='AdamW eps')
    train.add_argument('--lr', type=float, default=1e-4, help='peak learning rate')
    train.add_argument('--max_grad_norm', type=float, default=5.0, help='gradient clipping (0: none)')
    _add_bool(train, 'enable_lr_schedule', True, 'cosine schedule with warm-up')
    train.add_argument('--warmup_steps', type=int, default=100, help='linear warm-up steps of the schedule')
    train.add_argument('--mrl_loss', type=str, default='sum', choices=['sum', 'mean'],
                       help="'sum' over sizes (paper) or 'mean' (released code)")
    train.add_argument('--amp', type=str, default='none', choices=['none', 'bf16'],
                       help='bf16 autocast for the matrix products (CPU and CUDA)')
    _add_bool(train, 'compile', False, 'torch.compile the model')
    train.add_argument('--threads', type=int, default=0,
                       help='CPU threads of this process (0: OMP_NUM_THREADS when set, else the cores it may use, '
                            'shared among torchrun\'s processes on the machine); recorded in environment.yaml')
    train.add_argument('--loss_item_chunk', type=int, default=0,
                       help='catalogue columns per chunk of the training loss, whose memory then stays bounded in '
                            'the number of items (0: chunk only when the unchunked loss would need over 1 GB; '
                            'benchmarks/README.md, "Catalogue size")')

    evaluation = p.add_argument_group('evaluation')
    _add_bool(evaluation, 'early_stopping', True, 'stop when validation stops improving')
    evaluation.add_argument('--early_stopping_patience', type=int, default=10,
                            help='epochs without improvement of --best_metric (largest size) before stopping')
    evaluation.add_argument('--metric_ks', type=int, nargs='+', default=[5, 10, 20, 50], help='cut-offs k of the metrics')
    evaluation.add_argument('--best_metric', type=str, default='NDCG@10', help='Recall@k, NDCG@k or MRR@k: picks the best epoch')
    _add_bool(evaluation, 'mask_history', False, "exclude the user's history items from the "
              'ranking (the released code does not)')
    _add_bool(evaluation, 'use_wandb', False, 'log to Weights & Biases (WANDB_MODE=offline works '
              'without an account)')
    _add_bool(evaluation, 'use_tensorboard', True, 'log to TensorBoard in <export_root>/tb')

    model = p.add_argument_group('model')
    model.add_argument('--model_code', type=str, default='lru', choices=['lru'], help='the sequence model')
    model.add_argument('--lru_max_len', type=int, default=50, help='input length: the last items of a history')
    model.add_argument('--lru_num_blocks', type=int, default=1, help="LRU blocks (the paper's best: 2)")
    model.add_argument('--lru_dropout', type=float, default=0.1, help='embedding and feed-forward dropout')
    model.add_argument('--lru_attn_dropout', type=float, default=0.1, help='LRU output dropout')
    _add_bool(model, 'lru_use_bias', True, 'biases in every MRL linear')
    model.add_argument('--lru_r_min', type=float, default=0.0, help='inner radius of the initial eigenvalues')
    model.add_argument('--lru_r_max', type=float, default=0.1, help='outer radius of the initial eigenvalues')
    model.add_argument('--mrl_hidden_sizes', type=str, default=DEFAULT_SIZES,
                       help='nested sizes, strictly increasing; the last is the model width D')
    _add_bool(model, 'use_language_encoder', True, 'use the frozen text features')
    model.add_argument('--language_encoder', type=str, default=DEFAULT_LANGUAGE_ENCODER,
                       help='sentence-transformers id or local folder (README, "Data": an offline one)')
    _add_bool(model, 'use_img_encoder', True, 'use the frozen image features')
    model.add_argument('--img_encoder', type=str, default=DEFAULT_IMG_ENCODER, help='transformers id or local folder')
    _add_bool(model, 'item_id_embedding', False, 'hybrid items: projection(features) + a learned, nested '
              'ID table (beyond the paper; docs/content_features.md)')
    model.add_argument('--id_dropout', type=float, default=0.0,
                       help="with --item_id_embedding: drop each item's whole ID row with this probability per "
                            'training step, so that items without a trained row are scored well (docs/content_features.md, '
                            'Cold start)')
    model.add_argument('--content_loss_weight', type=float, default=0.0,
                       help='with --item_id_embedding: add this times the loss of the projected features alone '
                            '(no ID rows) to the training loss')
    model.add_argument('--feature_batch_size', type=int, default=64,
                       help='batch size when encoding item text and images')

    run = p.add_argument_group('run folder')
    run.add_argument('--export_root', type=str, default=None,
                     help='run folder; default experiments/<branch>/lru/<code>_dp<dropout>_rmin<r_min>_<time>')
    run.add_argument('--resume', type=str, default=None,
                     help="a run folder to continue, or 'auto' for --export_root")
    _add_bool(run, 'accept_changed_inputs', False, 'with --resume: go on although the dataset or a feature table '
              'differs from what the run was trained on (RUN/inputs.json; said in the log and the metrics files)')
    return p


def _git_branch():
    try:
        out = subprocess.run(['git', 'rev-parse', '--abbrev-ref', 'HEAD'], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parent)
        branch = out.stdout.strip()
        return branch if out.returncode == 0 and branch and branch != 'HEAD' else 'main'
    except (OSError, subprocess.SubprocessError):
        return 'main'


def default_export_root(args):
    stamp = time.strftime('%Y-%m-%d_%H-%M-%S')
    name = f'{args.dataset_code}_dp{args.lru_dropout}_rmin{args.lru_r_min}_{stamp}'
    return str(Path(EXPERIMENT_ROOT) / _git_branch() / args.model_code / name)


def finalize(args):
    """Validate and derive fields; raises ConfigError with the reason."""
    retired_problem = pop_retired_options(args)  # never kept: they change nothing
    if retired_problem:
        raise ConfigError(retired_problem)
    args.mrl_hidden_sizes = parse_sizes(args.mrl_hidden_sizes)
    if args.lru_max_len < 1:
        raise ConfigError(f'--lru_max_len must be at least 1, got {args.lru_max_len}')
    if args.threads < 0:
        raise ConfigError(f'--threads must be 0 (automatic) or a positive number, got {args.threads}')
    if args.loss_item_chunk < 0:
        raise ConfigError(f'--loss_item_chunk must be 0 (automatic) or a positive number of items, '
                          f'got {args.loss_item_chunk}')
    if args.lru_num_blocks < 1:
        raise ConfigError(f'--lru_num_blocks must be at least 1, got {args.lru_num_blocks}')
    if not 0.0 <= args.lru_r_min < args.lru_r_max <= 1.0:
        raise ConfigError(f'need 0 <= --lru_r_min < --lru_r_max <= 1, got {args.lru_r_min}, {args.lru_r_max}')
    for name in ('lru_dropout', 'lru_attn_dropout'):
        if not 0.0 <= getattr(args, name) < 1.0:
            raise ConfigError(f'--{name} must be in [0, 1), got {getattr(args, name)}')
    for name, low, inclusive in (('lr', 0.0, False), ('adam_epsilon', 0.0, False), ('weight_decay', 0.0, True),
                                 ('max_grad_norm', 0.0, True)):
        value = getattr(args, name)
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            relation = '>=' if inclusive else '>'
            raise ConfigError(f'--{name} must be a finite number {relation} {low}, got {value}')
    if args.warmup_steps < 0:
        raise ConfigError(f'--warmup_steps must be at least 0, got {args.warmup_steps}')
    if args.early_stopping_patience < 1:
        raise ConfigError(f'--early_stopping_patience must be at least 1, got {args.early_stopping_patience}')
    if args.num_epochs is None:
        args.num_epochs = DEMO_EPOCHS if args.dataset_code == DEMO_CODE else 500
    for name in ('train_batch_size', 'val_batch_size', 'test_batch_size', 'num_epochs'):
        if getattr(args, name) < 1:
            raise ConfigError(f'--{name} must be at least 1, got {getattr(args, name)}')
    if any(k < 1 for k in args.metric_ks):
        raise ConfigError(f'--metric_ks must be positive, got {args.metric_ks}')
    args.metric_ks = sorted(set(args.metric_ks))
    metric, _, k = args.best_metric.partition('@')
    if metric not in ('Recall', 'NDCG', 'MRR') or not k.isdigit() or int(k) not in args.metric_ks:
        raise ConfigError(f'--best_metric must be Recall@k, NDCG@k or MRR@k with k in '
                          f'--metric_ks {args.metric_ks}, got {args.best_metric!r}')
    try:
        args.text_fields = parse_text_fields(args.text_fields)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if not (args.use_language_encoder or args.use_img_encoder):
        # Options that act on features would be silently ignored by the ID-only model.
        ignored = [f'--{name}' for name, default in (('item_id_embedding', False), ('feature_preprocessing', 'none'))
                   if getattr(args, name) != default]
        if ignored:
            raise ConfigError(f'{" and ".join(ignored)} act on frozen features, but text and image are both off '
                              f'(the ID-only model); turn on --use_language_encoder or --use_img_encoder')
    if not 0.0 <= args.id_dropout < 1.0 or not (math.isfinite(args.content_loss_weight) and args.content_loss_weight >= 0):
        raise ConfigError(f'need 0 <= --id_dropout < 1 and a finite --content_loss_weight >= 0, got {args.id_dropout} '
                          f'and {args.content_loss_weight}')
    remedies = [f'--{name}' for name in ('id_dropout', 'content_loss_weight') if getattr(args, name)]
    if remedies and not args.item_id_embedding:
        raise ConfigError(f'{" and ".join(remedies)} train the ID rows of the hybrid (--item_id_embedding), which is off')
    problem = cold_start_problem(args)
    if problem:
        raise ConfigError(problem)
    if args.text_fields != 'all' and not args.use_language_encoder:
        raise ConfigError(f'--text_fields {args.text_fields} chooses the item text, but --use_language_encoder is off')
    if args.text_fields != 'all' and args.dataset_code == DEMO_CODE:
        raise ConfigError(f"--text_fields {args.text_fields}: the demo's text features are synthetic, not encoded "
                          f'from item text; use --text_fields all with --dataset_code demo')
    if args.dataset_code == DEMO_CODE:
        # The demo ships its own synthetic features; the hub encoders are never needed for it.
        if args.language_encoder == DEFAULT_LANGUAGE_ENCODER:
            args.language_encoder = DEMO_ENCODER
        if args.img_encoder == DEFAULT_IMG_ENCODER:
            args.img_encoder = DEMO_ENCODER
    if args.export_root is None:
        args.export_root = default_export_root(args)
    return args


def expand_config(argv):
    """`argv` with `--config FILE` replaced by the file's options (command-line options after them,
    so they win); a bad file stops like a bad option (exit status 2)."""
    try:
        return expand_config_argv([] if argv is None else argv, build_parser())
    except ConfigFileError as error:
        build_parser().error(str(error))


def parse_args(argv=None):
    """Parse `argv` (a list; None means no arguments, not sys.argv) into a validated namespace."""
    parser = build_parser()
    argv = expand_config(argv)
    args = parser.parse_args(argv)
    try:
        return finalize(args)
    except ConfigError as error:
        parser.error(name_config_file(str(error), argv))
