"""Small file helpers: every output is written to a temporary file in the same folder, flushed to
disk, then renamed over the target. A rename is atomic, so a crash at any moment leaves either the
old file or the new one, never a truncated one (at worst a stray `.<name>.*.tmp` file)."""
import csv
import errno
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
import yaml

TMP_SUFFIX = '.tmp'
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """A write ran out of disk space. The file it was to replace is intact; nothing half-written is left."""


def _is_disk_full(error):
    """Whether `error`, or an error it was raised from or while handling, is ENOSPC or EDQUOT."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return True
        error = error.__cause__ or error.__context__
    return False


def free_bytes(folder):
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _disk_full_error(path):
    free = free_bytes(path.parent)
    left = '' if free is None else f' ({free / 2 ** 20:.1f} MiB free there without the partial file)'
    return DiskFullError(errno.ENOSPC, f'no space left on device while writing {path}{left}', str(path))


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
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, Exception) and _is_disk_full(error):
            # torch reports a full disk as a 30-line RuntimeError that never says so
            raise _disk_full_error(path) from None
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
    def write(tmp):
        # Through a Python file: a full disk then surfaces as OSError(ENOSPC), which torch's own
        # writer turns into "unexpected pos"; and the archive's inner name is fixed, not the tmp name.
        with open(tmp, 'wb') as out:
            torch.save(obj, out)
    _atomic_write(path, write, before_rename)


def remove_stale_temporaries(folder):
    """Delete `.<name>.*.tmp` files that a killed writer left in `folder`; returns their names."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.glob(f'.*{TMP_SUFFIX}') if p.is_file())
    for path in stale:
        path.unlink()
    return [p.name for p in stale]
