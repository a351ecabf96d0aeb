"""A run folder without training, for the tests of export, recommend and params.

It holds args.yaml, inputs.json (what the run was trained on) and a best checkpoint of randomised weights: every parameter except the LRU's
ring-initialised eigenvalues is redrawn, imaginary parts and LayerNorm affines included, so that
a slicing mistake anywhere changes the scores.
"""
import shutil

import torch

from config import parse_args
from runs.run_folder import BEST_CHECKPOINT, STATE_DICT_KEY, write_inputs_record
from runs.run_inputs import build_model, load_data
from utils.io import write_json, write_yaml

SIZES = [4, 8, 16, 32]


def randomise(model, seed=0, scale=0.3):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not name.endswith('params_log'):  # keep |lambda| < 1: a stable recurrence
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return model.eval()


def copy_demo(demo_root, data_root, with_meta=True):
    """A private copy of the demo data (tests may delete it, or its metadata)."""
    shutil.copytree(demo_root / 'demo', data_root / 'demo')
    if not with_meta:
        (data_root / 'demo' / 'meta.json.gz').unlink()
    return data_root


def make_run(run_dir, data_root, sizes=SIZES, extra_args=(), seed=0):
    """Write a run folder for the demo in `data_root`; returns the full model (eval mode)."""
    argv = ['--dataset_code', 'demo', '--data_root', str(data_root), '--export_root', str(run_dir),
            '--mrl_hidden_sizes', ','.join(str(s) for s in sizes), *extra_args]
    args = parse_args(argv)
    data, _, features = load_data(args)
    model = randomise(build_model(args, data.num_items, features), seed)
    write_yaml(run_dir / 'args.yaml', {k: v for k, v in vars(args).items() if not k.startswith('resolved_')})
    write_inputs_record(run_dir, args.resolved_inputs.fingerprint)
    (run_dir / 'models').mkdir(parents=True, exist_ok=True)
    torch.save({STATE_DICT_KEY: model.state_dict()}, run_dir / 'models' / BEST_CHECKPOINT)
    write_json(run_dir / 'test_mrl_metrics.json',
               {str(s): {'Recall@10': 0.1 + 0.01 * k, 'NDCG@10': 0.05 + 0.01 * k} for k, s in enumerate(sizes)})
    return model
