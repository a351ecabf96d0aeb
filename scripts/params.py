"""Parameter accounting (the paper's Figure 4): one nested run against separately trained models.

    python scripts/params.py                           # the paper's set-up: sizes 8..1024, 2 blocks, 2048-d features
    python scripts/params.py --export_root RUN         # a trained run (its checkpoint decides the shapes)
    python scripts/params.py --sizes 8,16,32,64,128,256,512,1024,2048 --plot d2048.png

For every size s it prints the parameters of the nested slice of width s, of an independently
trained (dense) model of width s, of all independent models of the sizes up to s, and the saving
of one nested run over them, under two counts (model/slicing.py, docs/deploy.md):
'stored' (what this project's modules and files hold) and 'paper' (dense weight matrices, complex
entries counted once: the count that reproduces the paper's 10.5M against 14M). Draws both as a PNG.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python scripts/params.py` runs from anywhere

from config import DEFAULT_SIZES, ConfigError, parse_sizes  # noqa: E402  (after the path set-up above)
from model.slicing import CONVENTIONS, nested_and_independent  # noqa: E402
from runs.run_folder import (STATE_DICT_KEY, CheckpointError, best_checkpoint_path, load_checkpoint,  # noqa: E402
                             read_run_config)
from utils.paper import PAPER_FEATURE_WIDTH, PAPER_NUM_BLOCKS  # noqa: E402

PAPER_FEATURE_DIM = 2 * PAPER_FEATURE_WIDTH  # text + image
DEFAULT_PLOT_DIR = Path('experiments') / 'plots'  # ignored by git


def run_shapes(export_root):
    """The counting options of a trained run, read from args.yaml and its best checkpoint."""
    config = read_run_config(export_root)
    state = load_checkpoint(best_checkpoint_path(export_root))[STATE_DICT_KEY]
    shapes = {'sizes': list(config['mrl_hidden_sizes']), 'num_blocks': int(config['lru_num_blocks']),
              'bias': bool(config['lru_use_bias'])}
    if 'projection.weight' in state:
        shapes['feature_dim'] = int(state['projection.weight'].shape[1])
    if 'id_embedding.weight' in state:
        shapes['num_items'] = int(state['id_embedding.weight'].shape[0]) - 1
    shapes['id_table'] = 'projection.weight' in state and 'id_embedding.weight' in state
    return shapes, sum(t.numel() for t in state.values())


def markdown_table(rows):
    lines = ['| size | nested slice | independent model | independent, all sizes <= s | saving |',
             '|---:|---:|---:|---:|---:|']
    for row in rows:
        lines.append(f'| {row["size"]} | {row["nested"]:,} | {row["independent"]:,} | '
                     f'{row["independent_cumulative"]:,} | {100 * row["saving"]:.1f}% |')
    return '\n'.join(lines)


def describe(shapes):
    items = (f'{shapes["feature_dim"]}-d features' if shapes.get('feature_dim') is not None
             else f'ID table of {shapes["num_items"]} items')
    if shapes.get('id_table'):
        items += f' plus an ID table of {shapes["num_items"]} items'
    return (f'sizes {",".join(str(s) for s in shapes["sizes"])}, {shapes["num_blocks"]} block(s), {items}, '
            f'{"with" if shapes["bias"] else "no"} biases')


def plot_parameters(tables, out_path, title):
    """One panel per count: the nested run against the sum of independent models, by size."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(5 * len(tables), 3.8), squeeze=False)
    for ax, (convention, rows) in zip(axes[0], tables.items()):
        sizes = [r['size'] for r in rows]
        ax.plot(sizes, [r['nested'] / 1e6 for r in rows], marker='o', label='one nested run (fMRLRec)')
        ax.plot(sizes, [r['independent_cumulative'] / 1e6 for r in rows], marker='s',
                label='independent models, all sizes <= s')
        ax.plot(sizes, [r['independent'] / 1e6 for r in rows], linestyle=':', marker='.',
                label='one independent model of size s')
        ax.set_xscale('log', base=2)
        ax.set_xlabel('largest size s')
        ax.set_ylabel('parameters (millions)')
        ax.set_title(f'{convention} count')
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def parse_params_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--export_root', help='count a trained run (overrides the shape options below)')
    p.add_argument('--sizes', default=DEFAULT_SIZES, help='nested sizes (default the paper\'s)')
    p.add_argument('--num_blocks', type=int, default=PAPER_NUM_BLOCKS)
    p.add_argument('--feature_dim', type=int, default=PAPER_FEATURE_DIM,
                   help='projection input width (text + image); 0 for the ID-only model (needs --num_items)')
    p.add_argument('--num_items', type=int, default=None, help='ID-only model: items in the ID table')
    p.add_argument('--no_bias', action='store_true', help='MRL linears without biases')
    p.add_argument('--convention', choices=CONVENTIONS + ('both',), default='both')
    p.add_argument('--plot', default=None, help='PNG path (default RUN/plots/parameters.png, or '
                   f'{DEFAULT_PLOT_DIR}/parameters_<sizes>.png)')
    options = p.parse_args(argv)
    if options.export_root is None and options.feature_dim == 0 and options.num_items is None:
        p.error('--feature_dim 0 (ID-only) needs --num_items')
    return options


def main(argv=None):
    options = parse_params_args(sys.argv[1:] if argv is None else argv)
    checkpoint_total = None
    try:
        if options.export_root:
            shapes, checkpoint_total = run_shapes(options.export_root)
        else:
            shapes = {'sizes': parse_sizes(options.sizes), 'num_blocks': options.num_blocks,
                      'bias': not options.no_bias}
            if options.feature_dim:
                shapes['feature_dim'] = options.feature_dim
            else:
                shapes['num_items'] = options.num_items
    except (CheckpointError, ConfigError) as error:
        raise SystemExit(str(error)) from None
    conventions = CONVENTIONS if options.convention == 'both' else (options.convention,)
    tables = {c: nested_and_independent(convention=c, **shapes) for c in conventions}
    print(f'Parameters of {describe(shapes)}')
    for convention, rows in tables.items():
        last = rows[-1]
        print(f'\n{convention} count: one nested run of width {last["size"]} holds {last["nested"]:,}; '
              f'independent models of every size hold {last["independent_cumulative"]:,} '
              f'(saving {100 * last["saving"]:.1f}%)\n' + markdown_table(rows))
    if checkpoint_total is not None and 'stored' in tables:
        stored = tables['stored'][-1]['nested']
        verdict = 'matches' if stored == checkpoint_total else 'DOES NOT MATCH'
        print(f'\nstored count of the full model {stored:,} {verdict} the checkpoint ({checkpoint_total:,} numbers)')
    default_plot = (Path(options.export_root) / 'plots' / 'parameters.png' if options.export_root else
                    DEFAULT_PLOT_DIR / f'parameters_{"-".join(str(s) for s in shapes["sizes"])}.png')
    path = plot_parameters(tables, options.plot or default_plot, describe(shapes))
    print(f'\nwrote {path}')
    return tables


if __name__ == '__main__':
    main()
