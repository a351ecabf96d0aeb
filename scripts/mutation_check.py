"""Mutation check: does each deliberate one-line bug of scripts/mutations.py fail the tests aimed at it?

    python scripts/mutation_check.py                  # every mutation (~5 minutes on 2 cores)
    python scripts/mutation_check.py --only warm-up-removed,clipping-off
    python scripts/mutation_check.py --area split     # one area: split, training loop, model, ...
    python scripts/mutation_check.py --list           # names, areas and intents; nothing runs

The working tree is never edited (others may be editing it): its tracked and untracked-but-not-
ignored files are copied to a temporary folder, the targeted tests are run there once unmutated
(they must pass), then each mutation is applied to the copy, its tests run, and the file restored.
Only the tests aimed at a mutation run, so a bug caught only by accident elsewhere counts as a
survivor. Not part of CI (too slow); exit status 0 when every mutation is caught, 1 otherwise.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mutations import MUTATIONS  # noqa: E402  (after the path set-up above)

# pytest's exit statuses: 0 all passed, 1 some test failed; anything else (a collection error, an
# import broken by the mutation, no test found) says nothing about the tests, so it is an error.
PASSED, TESTS_FAILED = 0, 1


def copy_working_tree(destination):
    """Tracked and untracked files that git does not ignore, as they are now (uncommitted edits too)."""
    listed = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split('\0')
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is skipped
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def test_environment():
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1',
           'TRANSFORMERS_OFFLINE': '1', 'WANDB_MODE': 'offline',
           # A mutated file and its restored original can share size and mtime second: a cached .pyc
           # would then be reused for the wrong source.
           'PYTHONDONTWRITEBYTECODE': '1'}
    env.pop('FMRLREC_FAULT', None)
    return env


def run_tests(root, tests, timeout):
    """(pytest exit status, first failing test or '', seconds) for `tests` in the copy at `root`."""
    started = time.time()
    command = [sys.executable, '-m', 'pytest', '-q', '-x', '-p', 'no:cacheprovider', '-p', 'no:randomly', *tests]
    try:
        done = subprocess.run(command, cwd=root, env=test_environment(), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, 'timed out', time.time() - started
    # "FAILED <node id> - <message>"; a node id may hold spaces (parameters such as [4, 8, 16])
    failed = re.findall(r'^(?:FAILED|ERROR) (.+?)(?: - .*)?$', done.stdout, flags=re.MULTILINE)
    detail = failed[0] if failed else (done.stdout.strip().splitlines() or [''])[-1]
    return done.returncode, detail, time.time() - started


def apply(root, mutation):
    """Write the mutated file into the copy; returns the original text, or None when `old` does not
    occur exactly once (the code changed: the list needs updating)."""
    path = root / mutation.path
    text = path.read_text()
    if text.count(mutation.old) != 1:
        return None
    path.write_text(text.replace(mutation.old, mutation.new))
    return text


def check(root, mutation, timeout):
    original = apply(root, mutation)
    if original is None:
        return 'NOT APPLIED', f'{mutation.path} no longer holds the line once', 0.0
    try:
        status, detail, seconds = run_tests(root, mutation.tests, timeout)
    finally:
        (root / mutation.path).write_text(original)
    if status == TESTS_FAILED:
        return 'caught', detail, seconds
    if status == PASSED:
        return 'SURVIVED', '', seconds
    return 'ERROR', f'pytest status {status}: {detail}', seconds


def select(args):
    chosen = MUTATIONS
    if args.only:
        names = set(args.only.split(','))
        unknown = names - {m.name for m in MUTATIONS}
        if unknown:
            raise SystemExit(f'unknown mutation(s): {", ".join(sorted(unknown))} (see --list)')
        chosen = [m for m in chosen if m.name in names]
    if args.area:
        chosen = [m for m in chosen if m.area == args.area]
        if not chosen:  # an empty selection would run the whole suite unmutated, and check nothing
            areas = ', '.join(dict.fromkeys(m.area for m in MUTATIONS))
            raise SystemExit(f'no mutation in area {args.area!r} (areas: {areas})')
    return chosen


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--only', help='comma-separated mutation names')
    parser.add_argument('--area', help=', '.join(dict.fromkeys(m.area for m in MUTATIONS)))
    parser.add_argument('--list', action='store_true', help='print the mutations and stop')
    parser.add_argument('--timeout', type=int, default=300, help='seconds per test run')
    parser.add_argument('--keep', action='store_true', help='keep the copy of the repository (its path is printed)')
    args = parser.parse_args(argv)
    chosen = select(args)
    if args.list:
        for m in chosen:
            print(f'{m.name:36} {m.area:15} {m.intent}')
        return 0
    root = Path(tempfile.mkdtemp(prefix='fmrlrec-mutants-'))
    try:
        copy_working_tree(root)
        targeted = sorted({test for m in chosen for test in m.tests})
        status, detail, seconds = run_tests(root, targeted, args.timeout * 2)
        print(f'unmutated: {len(targeted)} targeted test node(s), status {status} ({seconds:.0f}s)', flush=True)
        if status != PASSED:
            print(f'the targeted tests fail without any mutation ({detail}); fix them first')
            return 1
        results = []
        print(f'| mutation | area | result | caught by | s |\n|---|---|---|---|---:|', flush=True)
        for mutation in chosen:
            result, detail, seconds = check(root, mutation, args.timeout)
            results.append(result)
            print(f'| {mutation.name} | {mutation.area} | {result} | {detail} | {seconds:.0f} |', flush=True)
        caught = results.count('caught')
        print(f'\n{caught} of {len(results)} mutations caught by the tests aimed at them'
              + ('' if caught == len(results) else f'; not caught: {len(results) - caught}'))
        return 0 if caught == len(results) else 1
    finally:
        if args.keep:
            print(f'copy kept in {root}')
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
