"""Per-size result tables (plain text for the terminal, markdown for files)."""

# The metrics that per-size tables show (the terminal's after testing, size_summary.md), in this order.
SIZE_TABLE_COLUMNS = ('Recall@5', 'NDCG@5', 'Recall@10', 'NDCG@10', 'Recall@20', 'NDCG@20')


def metrics_table(metrics_by_size, columns=SIZE_TABLE_COLUMNS):
    """A markdown table, one row per size. `metrics_by_size`: {size: {metric: value}}."""
    sizes = sorted(metrics_by_size, key=int)
    columns = [c for c in columns if c in metrics_by_size[sizes[0]]]
    lines = ['| size | ' + ' | '.join(columns) + ' |', '|---:|' + '---:|' * len(columns)]
    for size in sizes:
        lines.append(f'| {size} | ' + ' | '.join(f'{metrics_by_size[size][c]:.4f}' for c in columns) + ' |')
    return '\n'.join(lines)
