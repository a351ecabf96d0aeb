"""Shared test set-up: the repo root on sys.path, no hub access, a small generated demo dataset."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / 'shared' / 'data' / 'amazon'
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('WANDB_MODE', 'offline')
# Thread counts that follow the machine's load would make runs compared bit for bit differ by chance;
# tests/test_thread_governor.py tests it on its own.
os.environ['FMRLREC_ADAPTIVE_THREADS'] = '0'
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope='session')
def demo_root(tmp_path_factory):
    """A data root holding the generated demo dataset (data_root/demo/...)."""
    from datasets.demo import generate
    root = tmp_path_factory.mktemp('data')
    generate(root / 'demo', seed=0)
    return root


@pytest.fixture(autouse=True)
def no_pinned_cpu_route_leaks():
    """A run resumed in-process pins its checkpoint's CPU route for the rest of the process
    (model/cpu_routes.py): right for train.py, a leak between tests. Each test ends unpinned."""
    yield
    from model import fp32_matmul
    fp32_matmul.pin_route(None)
