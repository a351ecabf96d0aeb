"""Small file helpers: every output is written to a temporary file, flushed, then renamed."""
import csv
import json
import os
import tempfile
from pathlib import Path

import torch
import yaml


def atomic_write_bytes(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(handle, 'wb') as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode('utf-8'))


def write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2) + '\n')


def write_yaml(path, obj):
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def write_csv(path, rows):
    """rows: list of dicts with the same keys (the first row's keys are the header)."""
    if not rows:
        return
    from io import StringIO
    buffer = StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0].keys()), extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def atomic_torch_save(obj, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    os.close(handle)
    try:
        torch.save(obj, tmp)
        with open(tmp, 'rb') as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
