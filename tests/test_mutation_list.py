"""The mutation check's list (scripts/mutations.py) stays applicable as the code changes: each bug
still finds its line exactly once and changes one line, and each test aimed at it exists. (The
check itself, scripts/mutation_check.py, takes minutes and is run by hand; README, "Testing".)"""
import re
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / 'scripts'))
from mutations import MUTATIONS  # noqa: E402  (scripts/ is not a package)

AREAS = {'split', 'training loop', 'initialisation', 'model', 'metrics', 'evaluation', 'slicing', 'cold start', 'studies'}


def test_the_list_covers_every_area_with_unique_names():
    assert {m.area for m in MUTATIONS} == AREAS
    names = [m.name for m in MUTATIONS]
    assert len(names) == len(set(names)) >= 20


@pytest.mark.parametrize('mutation', MUTATIONS, ids=lambda m: m.name)
def test_each_mutation_applies_once_and_changes_one_line(mutation):
    text = (ROOT / mutation.path).read_text()
    assert text.count(mutation.old) == 1, f'{mutation.path} no longer holds {mutation.old!r} exactly once'
    old_lines, new_lines = mutation.old.split('\n'), mutation.new.split('\n')
    assert len(old_lines) == len(new_lines)
    assert sum(a != b for a, b in zip(old_lines, new_lines)) == 1
    compile(text.replace(mutation.old, mutation.new), mutation.path, 'exec')  # a bug, not a syntax error


@pytest.mark.parametrize('mutation', MUTATIONS, ids=lambda m: m.name)
def test_each_targeted_test_exists(mutation):
    assert mutation.tests
    for node in mutation.tests:
        path, _, name = node.partition('::')
        source = (ROOT / path).read_text()
        if name:
            assert re.search(rf'^def {re.escape(name)}\(', source, flags=re.MULTILINE), node
        else:
            assert re.search(r'^def test_', source, flags=re.MULTILINE), node
