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

from utils.omp_policy import set_wait_policy  # before anything imports torch (utils/omp_policy.py)

set_wait_policy()

import torch

from config import ConfigError, expand_config, parse_args
from datasets.features import FeatureTableError
from datasets.p5 import DataError
from evaluation.final_evaluation import (evaluate_best_checkpoint, evaluate_best_checkpoint_sharded,
                                         print_cold_start_table, print_popularity_table, print_table)
from evaluation.metrics import NonFiniteScoresError
from runs.loggers import LoggerError
from runs.run_config import config_dict, prepare_run_folder, resume_arguments
from runs.run_folder import (CheckpointError, RunFolderError, check_run_folder_writable,
                             metrics_path, recent_checkpoint_path)
from runs.run_inputs import build_model, load_data, run_cold_start, run_modality_name
from runs.run_lock import RunFolderLock
from runs.stop_reports import RunProgress, disk_full_report, interrupted_report, non_finite_report
from trainer.compile import check_compile, compile_for_training
from trainer.distributed import init_distributed, main_first, shutdown, wrap_model
from trainer.resume import load_resume_state
from trainer.trainer import NonFiniteLossError, Trainer, rank_seed
from utils.environment import append_environment, environment_record, note_thread_changes
from utils.io import DiskFullError
from utils.run_log import RunLog
from utils.runtime import DeviceError, automatic_threads, cpu_threads, set_seed, torch_threads
from utils.thread_governor import governed, thread_changes

# Errors that mean "fix your input or your set-up": reported as one line, without a traceback.
USER_ERRORS = (ConfigError, DataError, FeatureTableError, CheckpointError, DeviceError, RunFolderError, LoggerError)
INTERRUPTED_STATUS = 130  # the shell's status for a process stopped by SIGINT


def load_inputs(args, group, say, lock):
    """Rank 0 first (main_first): the run folder is probed before the data is read, so that a bad
    --export_root, or one that a live train.py writes, stops at once, not after the feature tables
    were built."""
    if group.is_main:
        check_run_folder_writable(args.export_root)
        lock.acquire(create=False)  # a folder without a lock file yet is locked when args.yaml is written
    return load_data(args, say)


def run(argv, group, device, progress, log):
    args = resume_arguments(argv)
    threads = cpu_threads(args.threads)
    with RunFolderLock(args.export_root, enabled=group.is_main) as lock, torch_threads(threads), \
            governed(threads, automatic_threads(args.threads), group.enabled):
        return run_locked(args, group, device, progress, log, lock)


def run_locked(args, group, device, progress, log, lock):
    progress.root = args.export_root
    say = print if group.is_main else (lambda *_, **__: None)
    args.resolved_device = str(device)
    check_compile(args.compile, device)
    set_seed(args.seed)
    # Rank 0 generates the demo or builds missing feature caches alone; the others then read them.
    data, splits, features = main_first(group, lambda: load_inputs(args, group, say, lock))
    say(f'{args.dataset_code}: {data.num_users} users, {data.num_items} items, '
        f'{data.num_interactions} interactions; features: {run_modality_name(args)}; device {device}'
        + (f' x {group.world_size} processes' if group.enabled else ''))
    model = build_model(args, data.num_items, features).to(device)
    if group.rank > 0:
        set_seed(rank_seed(args.seed, group.rank))  # same initial weights, own dropout stream
    # Rank 0 first: when it cannot take the lock, the other ranks stop too instead of waiting for it.
    main_first(group, lambda: prepare_run_folder(args, write=group.is_main, lock=lock))
    progress.folder_written = True
    if group.is_main:
        log.attach(Path(args.export_root) / 'train.log')
    group.barrier()
    trainer = Trainer(args, model, splits, args.export_root, device, config_dict(args), group)
    progress.trainer = trainer
    recent = recent_checkpoint_path(args.export_root)
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
    cold_start = run_cold_start(args, splits)
    if group.enabled:
        by_size = evaluate_best_checkpoint_sharded(args, model, splits['test'], splits['train'], device, group,
                                                   cold_start)
    else:
        by_size = evaluate_best_checkpoint(args, model, splits['test'], args.export_root, device,
                                           training_examples=splits['train'], cold_start=cold_start)
    if group.is_main:
        print_table(by_size, f'Test metrics of the best checkpoint (epoch {trainer.best_epoch}), every size:')
        print_popularity_table(args.export_root)
        print_cold_start_table(args.export_root)
        trainer.loggers.log_test(by_size, config_dict(args), trainer.global_step)
    if device.type == 'cuda':
        say(f'peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f} GiB')
    if group.is_main and thread_changes():  # utils/thread_governor.py: what the machine's load made of the threads
        note_thread_changes(args.export_root, thread_changes())
    say(f'\nwrote {metrics_path(args.export_root)}')
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
