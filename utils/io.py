"""Small file helpers: every output is written to a temporary file in the same folder, flushed to
disk, then renamed over the target. A rename is atomic, so a crash at any moment leaves either the
old file or the new one, never a truncated one (at worst a stray `.<name>.*.tmp` file)."""
import csv
import io
import json
import os
import tempfile
from pathlib import Path

import torch
import yaml

TMP_SUFFIX = '.tmp'


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder):
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _atomic_write(path, write, before_rename=None):
    """Call `write(tmp_path)`, fsync the result, then rename it over `path`.

    `before_rename(tmp_path)` runs after the data is written and before the rename (tests use it
    to kill the process mid-save)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix=TMP_SUFFIX)
    os.close(handle)
    try:
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; outputs get normal permissions
        write(tmp)
        with open(tmp, 'rb') as written:
            os.fsync(written.fileno())
        if before_rename is not None:
            before_rename(tmp)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data):
    def write(tmp):
        with open(tmp, 'wb') as out:
            out.write(data)
    _atomic_write(path, write)


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode('utf-8'))


def write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2) + '\n')


def write_yaml(path, obj):
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def write_csv(path, rows):
    """rows: list of dicts; the header is the union of their keys in first-seen order."""
    if not rows:
        return
    fieldnames = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def atomic_torch_save(obj, path, before_rename=None):
    _atomic_write(path, lambda tmp: torch.save(obj, tmp), before_rename)


def remove_stale_temporaries(folder):
    """Delete `.<name>.*.tmp` files that a killed writer left in `folder`; returns their names."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.glob(f'.*{TMP_SUFFIX}') if p.is_file())
    for path in stale:
        path.unlink()
    return [p.name for p in stale]
