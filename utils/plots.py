"""PNG plots of each metric against model size (log scale)."""
from pathlib import Path


def plot_metrics_by_size(by_size, out_dir, title=''):
    """One PNG per metric family (Recall, NDCG, MRR), one line per k. Returns the written paths."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = sorted(by_size, key=int)
    names = list(by_size[sizes[0]])
    written = []
    for family in ('Recall', 'NDCG', 'MRR'):
        keys = [n for n in names if n.startswith(family + '@')]
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for key in keys:
            ax.plot([int(s) for s in sizes], [by_size[s][key] for s in sizes], marker='o', label=key)
        ax.set_xscale('log', base=2)
        ax.set_xlabel('model size (dims)')
        ax.set_ylabel(family)
        ax.set_title(f'{title} {family} by size'.strip())
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f'{family}_by_size.png'
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
