"""The bf16 check of scripts/paper_width.py: may the D = 1024 rows train in bf16? Its verdict and its report.

Three short runs of one row (fp32 seed 42, fp32 seed 43, bf16 seed 42) are compared epoch by epoch on validation
NDCG@10 at the largest size: bf16 passes when its gap to fp32 is within the two fp32 seeds' gap (at least
NOISE_FLOOR) at every epoch and bf16 is native. docs/content_features.md, "The paper's width".
"""
from typing import NamedTuple

from utils.paper import PAPER_SIZES

CHECK_EPOCHS = 2
# Two seeds can agree by chance at one epoch; below this NDCG@10 difference bf16 is never called different.
NOISE_FLOOR = 0.0005


class Verdict(NamedTuple):
    passed: bool
    reason: str  # one line, with the numbers
    epochs: list  # per epoch: the three validation NDCG@10, the bf16 difference, the noise it is held to


def bf16_verdict(fp32_log, seed2_log, bf16_log, native, floor=NOISE_FLOOR):
    """bf16 passes when, at every epoch, |bf16 - fp32| <= max(|fp32 - fp32 seed 43|, floor) in validation
    NDCG@10 (largest size), and bf16 is native: `native` is (bool, reason)."""
    logs = {'check_fp32': fp32_log, 'check_fp32_seed2': seed2_log, 'check_bf16': bf16_log}
    short = [f'{name} has {len(log)} of {CHECK_EPOCHS} epochs' for name, log in logs.items() if len(log) < CHECK_EPOCHS]
    if short:
        return Verdict(False, 'the check is not finished: ' + ', '.join(short), [])
    epochs = []
    for index in range(CHECK_EPOCHS):
        fp32, seed2, bf16 = (float(log[index]['val_NDCG@10']) for log in logs.values())
        noise = max(abs(fp32 - seed2), floor)
        epochs.append({'epoch': index + 1, 'fp32': fp32, 'fp32_seed2': seed2, 'bf16': bf16,
                       'difference': bf16 - fp32, 'noise': noise, 'within': abs(bf16 - fp32) <= noise})
    worst = max(epochs, key=lambda e: abs(e['difference']) / e['noise'])
    numbers = (f"epoch {worst['epoch']}: |bf16 - fp32| = {abs(worst['difference']):.5f} against the noise "
               f"{worst['noise']:.5f} (|fp32 - fp32 seed 43| = {abs(worst['fp32'] - worst['fp32_seed2']):.5f}, "
               f"floor {floor})")
    if not all(e['within'] for e in epochs):
        return Verdict(False, f'bf16 differs from fp32 beyond the run-to-run noise at {numbers}', epochs)
    if not native[0]:
        return Verdict(False, f'bf16 agrees with fp32 (largest gap at {numbers}) but is not native here: '
                              f'{native[1]}', epochs)
    return Verdict(True, f'bf16 agrees with fp32 within the run-to-run noise at every epoch (largest gap at '
                         f'{numbers}) and is native ({native[1]})', epochs)


def check_by_size(fp32_log, seed2_log, bf16_log):
    """Every size at the last check epoch: the three validation NDCG@10, |bf16 - fp32| and |seed 43 - fp32|.
    Shown, not judged: the verdict reads the largest size, and one seed pair is a rough noise estimate per size."""
    last = [log[CHECK_EPOCHS - 1] for log in (fp32_log, seed2_log, bf16_log)]
    rows = []
    for size in PAPER_SIZES:
        column = f'val_NDCG@10@size{size}'
        if not all(column in row for row in last):
            continue
        fp32, seed2, bf16 = (float(row[column]) for row in last)
        rows.append({'size': size, 'fp32': fp32, 'fp32_seed2': seed2, 'bf16': bf16,
                     'bf16_gap': abs(bf16 - fp32), 'seed_gap': abs(seed2 - fp32)})
    return rows


def check_markdown(check):
    lines = ['| epoch | fp32 | fp32 seed 43 | bf16 | bf16 - fp32 | noise | within |',
             '|---:|---:|---:|---:|---:|---:|---|']
    lines += [f"| {e['epoch']} | {e['fp32']:.4f} | {e['fp32_seed2']:.4f} | {e['bf16']:.4f} | {e['difference']:+.5f} | "
              f"{e['noise']:.5f} | {'yes' if e['within'] else 'no'} |" for e in check['epochs']]
    if check['by_size']:
        lines += ['', f'Every size at epoch {CHECK_EPOCHS} (shown, not judged: the verdict reads the largest size):', '',
                  '| size | fp32 | fp32 seed 43 | bf16 | abs(bf16 - fp32) | abs(seed 43 - fp32) | relative bf16 gap |',
                  '|---:|---:|---:|---:|---:|---:|---:|']
        for r in check['by_size']:
            relative = f"{r['bf16_gap'] / r['fp32']:.1%}" if r['fp32'] else '–'  # fp32 at 0: no relative gap
            lines.append(f"| {r['size']} | {r['fp32']:.4f} | {r['fp32_seed2']:.4f} | {r['bf16']:.4f} | "
                         f"{r['bf16_gap']:.5f} | {r['seed_gap']:.5f} | {relative} |")
    minutes = ', '.join(f"{name} {r['epochs']} epochs in {r['minutes']:.0f} min" for name, r in check['rows'].items())
    return '\n'.join(lines) + (f"\n\nNoise: max(|fp32 - fp32 seed 43|, {NOISE_FLOOR}). Verdict: "
                               f"{'bf16' if check['passed'] else 'fp32'}, because {check['reason']}.\n\n"
                               f"Check rows: {minutes}.")
