"""Train fMRLRec once, validate every epoch, then test the best checkpoint at every nested size.

    python train.py --dataset_code demo
    python train.py --dataset_code beauty --data_root data --lru_dropout 0.6 --lru_attn_dropout 0.6
    python train.py --resume RUN                        # continue RUN with its own options
    python train.py --resume auto --export_root RUN ... # continue RUN if it exists, else start it
    torchrun --nproc_per_node=4 train.py ...            # DistributedDataParallel, one process per GPU
"""
import contextlib
import os
import sys
from pathlib import Path

import torch

from config import ConfigError, expand_config, parse_args
from datasets.features import FeatureTableError
from datasets.p5 import DataError
from trainer.compile import check_compile, compile_for_training
from trainer.distributed import init_distributed, main_first, sharded_ranks, shutdown, wrap_model
from trainer.loggers import LoggerError
from trainer.metrics import NonFiniteScoresError
from trainer.run_folder import (RunFolderError, check_run_folder_writable, config_dict, config_differences,
                                prepare_run_folder, resume_arguments)
from trainer.setup import build_model, load_data, modality_name
from trainer.stop_reports import RunProgress, disk_full_report, interrupted_report, non_finite_report
from trainer.testing import (CheckpointError, load_checkpoint, load_model_weights, non_finite_checkpoint_message,
                             print_popularity_table, print_table, results_from_ranks, test_best)
from trainer.trainer import BEST_CHECKPOINT, RECENT_CHECKPOINT, RESUME_KEYS, NonFiniteLossError, Trainer, rank_seed
from utils.environment import append_environment, environment_record
from utils.io import DiskFullError
from utils.run_log import RunLog
from utils.runtime import DeviceError, set_seed

# Errors that mean "fix your input or your set-up": reported as one line, without a traceback.
USER_ERRORS = (ConfigError, DataError, FeatureTableError, CheckpointError, DeviceError, RunFolderError, LoggerError)
INTERRUPTED_STATUS = 130  # the shell's status for a process stopped by SIGINT


def load_resume_state(trainer, path, current_config):
    """Restore `trainer` from the recent checkpoint at `path`, or say exactly what is wrong with it."""
    what_to_do = (f'Checkpoints are written atomically, so this is damage from outside training (disk, '
                  f'copy, another program). Restore the file, or delete it to restart the run from its '
                  f'first epoch with the same command.')
    try:
        # To the CPU: load_state_dict then copies the weights and the AdamW state to the parameters'
        # devices, and the RNG states must be CPU tensors (whatever device saved them).
        checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as error:  # truncated, foreign or unreadable file
        raise CheckpointError(f'cannot resume: {path} is corrupt or not a checkpoint '
                              f'({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""}). '
                              f'{what_to_do}') from None
    missing = [key for key in RESUME_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise CheckpointError(f'cannot resume: {path} lacks {", ".join(missing)}; it is not a recent '
                              f'checkpoint of this project. {what_to_do}')
    differing = config_differences(checkpoint.get('config') or {}, current_config)
    if differing:
        raise CheckpointError(f'cannot resume: {path} was trained with another configuration '
                              f'({", ".join(differing[:6])}). Resume with the options it was trained with, '
                              f'or start a new run in another --export_root.')
    try:
        trainer.load_state(checkpoint)
    except (KeyError, RuntimeError, TypeError, ValueError) as error:
        raise CheckpointError(f'cannot resume: {path} does not fit this model '
                              f'({str(error).splitlines()[0]}). {what_to_do}') from None


def test_best_sharded(args, model, test_examples, training_examples, device, group):
    """test_best with every rank evaluating its share of the users; the ranks of all users are
    gathered on every rank, and rank 0 writes the files (popularity buckets included)."""
    root = Path(args.export_root)
    path = root / 'models' / BEST_CHECKPOINT
    checkpoint = load_checkpoint(path, 'cpu')
    load_model_weights(model, checkpoint, path)  # copied to the model's device
    ranks = sharded_ranks(model, test_examples, len(args.mrl_hidden_sizes), args.test_batch_size, device, group,
                          args.mask_history, args.amp, 'test')
    try:
        return results_from_ranks(args, ranks, test_examples, training_examples, root, write=group.is_main)
    except NonFiniteScoresError as error:
        raise CheckpointError(non_finite_checkpoint_message(error, path, checkpoint['model_state_dict'])) from None


def load_inputs(args, group, say):
    """Rank 0 first (main_first): the run folder is probed before the data is read, so that a bad
    --export_root stops at once, not after the feature tables were built."""
    if group.is_main:
        check_run_folder_writable(args.export_root)
    return load_data(args, say)


def run(argv, group, device, progress, log):
    args = resume_arguments(argv)
    progress.root = args.export_root
    say = print if group.is_main else (lambda *_, **__: None)
    args.resolved_device = str(device)
    check_compile(args.compile, device)
    set_seed(args.seed)
    # Rank 0 generates the demo or builds missing feature caches alone; the others then read them.
    data, splits, features = main_first(group, lambda: load_inputs(args, group, say))
    say(f'{args.dataset_code}: {data.num_users} users, {data.num_items} items, '
        f'{data.num_interactions} interactions; features: {modality_name(args)}; device {device}'
        + (f' x {group.world_size} processes' if group.enabled else ''))
    model = build_model(args, data.num_items, features).to(device)
    if group.rank > 0:
        set_seed(rank_seed(args.seed, group.rank))  # same initial weights, own dropout stream
    prepare_run_folder(args, write=group.is_main)
    progress.folder_written = True
    if group.is_main:
        log.attach(Path(args.export_root) / 'train.log')
    group.barrier()
    trainer = Trainer(args, model, splits, args.export_root, device, config_dict(args), group)
    progress.trainer = trainer
    recent = Path(args.export_root) / 'models' / RECENT_CHECKPOINT
    resumed = bool(args.resume) and recent.exists()
    if resumed:
        load_resume_state(trainer, recent, config_dict(args))
        say(f'resumed {args.export_root} after epoch {trainer.epoch} (step {trainer.global_step})')
    if group.is_main:
        append_environment(args.export_root, environment_record(device, group.world_size,
                                                                trainer.epoch if resumed else None))
        trainer.loggers = trainer.open_loggers()
    try:
        return train_and_test(args, trainer, model, splits, device, group, progress, say)
    finally:
        if trainer.loggers is not None:
            trainer.loggers.close()


def train_and_test(args, trainer, model, splits, device, group, progress, say):
    trainer.train_module = wrap_model(model, group, device)
    if args.compile:
        trainer.train_module = compile_for_training(trainer.train_module)
    say(f'run folder: {args.export_root}')
    progress.phase = 'train'
    trainer.fit()
    group.barrier()  # rank 0 has written the best checkpoint
    progress.phase = 'test'
    if group.enabled:
        by_size = test_best_sharded(args, model, splits['test'], splits['train'], device, group)
    else:
        by_size = test_best(args, model, splits['test'], args.export_root, device, training_examples=splits['train'])
    if group.is_main:
        print_table(by_size, f'Test metrics of the best checkpoint (epoch {trainer.best_epoch}), every size:')
        print_popularity_table(args.export_root)
        trainer.loggers.log_test(by_size, config_dict(args), trainer.global_step)
    if device.type == 'cuda':
        say(f'peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f} GiB')
    say(f'\nwrote {Path(args.export_root) / "test_mrl_metrics.json"}')
    return by_size


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    is_main = int(os.environ.get('RANK', '0')) == 0  # under torchrun every rank stops; rank 0 says why
    progress = RunProgress()
    with (RunLog() if is_main else contextlib.nullcontext()) as log:
        try:
            argv = expand_config(argv)
            group, device = init_distributed(parse_args(argv).device)
            try:
                return run(argv, group, device, progress, log)
            finally:
                shutdown(group)
        except USER_ERRORS as error:
            stop(log, is_main, f'error: {error}')
        except (NonFiniteLossError, NonFiniteScoresError) as error:
            if isinstance(error, NonFiniteScoresError):  # validation of an epoch whose last steps broke the weights
                error = f'validating epoch {progress.trainer.epoch + 1}: {error}'
            stop(log, is_main, non_finite_report(error, progress.trainer, progress.root))
        except DiskFullError as error:
            stop(log, is_main, disk_full_report(error, progress))
        except KeyboardInterrupt:
            stop(log, is_main, interrupted_report(progress), INTERRUPTED_STATUS)
        except SystemExit as exit_:  # argparse and the run-folder checks: keep their message in train.log
            if is_main and isinstance(exit_.code, str):
                log.keep(exit_.code + '\n')
            raise


def stop(log, is_main, message, status=1):
    """Exit with `status`, rank 0 printing `message` (and keeping it in train.log)."""
    if not is_main:
        raise SystemExit(status)
    if status == 1:
        log.keep(message + '\n')  # Python prints the message after main() has returned
        raise SystemExit(message)
    print(message, file=sys.stderr)  # copied into train.log
    raise SystemExit(status)


if __name__ == '__main__':
    main()
