"""One writer per run folder: train.py holds an OS lock on RUN/.train.lock while it writes the folder
(docs/resume.md, "One run folder, one writer"). fcntl.flock is released by the OS when the process
ends, however it ends, so a killed run never blocks its own resume."""
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from runs.run_folder import RunFolderError, cannot_write

LOCK_FILE = '.train.lock'  # JSON {"pid": ..., "host": ...} of the train.py that holds the lock


class RunFolderBusyError(RunFolderError):
    """Another live train.py writes the run folder."""


def _lock_holder(handle):
    """'pid 123 on host h' from an open lock file; the holder writes it just after locking, so a
    moment's wait covers the gap."""
    for _ in range(20):
        handle.seek(0)
        text = handle.read().strip()
        if text:
            try:
                holder = json.loads(text)
                return f'pid {int(holder["pid"])} on host {holder["host"]}'
            except (ValueError, KeyError, TypeError):
                return f'{text[:80]!r}'
        time.sleep(0.05)
    return 'a process that has not written its pid yet'


class RunFolderLock:
    """An exclusive fcntl.flock on RUN/.train.lock, held while a train.py writes RUN, so that a second
    train.py (with or without --resume) stops at once instead of writing the same files. The OS
    releases the lock when its process ends, however it ends: a run killed with SIGKILL never blocks
    its own resume, and no stale file has to be judged. The file stays (deleting a lock file races
    with the next locker); only the lock on it counts. `enabled=False` (ranks other than 0 under
    torchrun) makes every call a no-op."""

    def __init__(self, root, enabled=True):
        self.root = Path(root)
        self.path = self.root / LOCK_FILE
        self.enabled = enabled
        self._handle = None

    @property
    def held(self):
        return self._handle is not None

    def acquire(self, create=True):
        """Take the lock, or raise RunFolderBusyError naming the process that holds it. With
        create=False nothing is created: a folder without a lock file is left alone (returns False),
        so that the lock can be tried before the data has been checked."""
        if not self.enabled or self.held:
            return True
        try:
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        except OSError as error:
            if not create and isinstance(error, FileNotFoundError):
                return False
            raise cannot_write(self.root, error) from None
        handle = os.fdopen(descriptor, 'r+', encoding='utf-8')
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(handle)
            handle.close()
            raise RunFolderBusyError(
                f'{self.root} is in use: another train.py ({holder}) is writing it, and a run folder has one '
                f'writer. Wait for that run to end, or stop it and continue it with '
                f'`python train.py --resume {self.root}`; to train another run, choose another --export_root.'
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({'pid': os.getpid(), 'host': socket.gethostname()}) + '\n')
        handle.flush()
        self._handle = handle
        return True

    def release(self):
        if self._handle is not None:
            self._handle.close()  # closing the last descriptor releases the flock
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.release()
