"""RUN/train.log: a copy of what train.py prints.

Printing starts before the run folder exists (data loading, feature building), so the copy is kept
in memory until `attach(path)` names the log file, then written there and appended to from then on
(a resumed run appends to the same file). Progress-bar redraws (writes containing a carriage
return) are left out of the file. A failing log write (a full disk) never stops training: the copy
just stops.
"""
import sys
import time


class _Copy:
    """A text stream that writes to `stream` and hands every write to `sink` as well."""

    def __init__(self, stream, sink):
        self.stream, self.sink = stream, sink

    def write(self, text):
        self.sink(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding ... of the real stream
        return getattr(self.stream, name)


class RunLog:
    """Copies sys.stdout and sys.stderr while active; use as a context manager."""

    def __init__(self):
        self.pending = []
        self.handle = None
        self.saved_streams = None

    def __enter__(self):
        self.saved_streams = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Copy(sys.stdout, self.keep), _Copy(sys.stderr, self.keep)
        return self

    def __exit__(self, *exc_info):
        sys.stdout, sys.stderr = self.saved_streams
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def keep(self, text):
        if not text or '\r' in text:
            return
        if self.handle is None:
            if self.pending is not None:
                self.pending.append(text)
            return
        try:
            self.handle.write(text)
            self.handle.flush()
        except OSError:
            self.stop_copying()

    def attach(self, path):
        """Write what was printed so far to `path` (appending) and keep copying into it."""
        try:
            self.handle = open(path, 'a', encoding='utf-8')
            self.handle.write(f'==== {time.strftime("%Y-%m-%d %H:%M:%S")} python {" ".join(sys.argv)}\n')
            self.handle.write(''.join(self.pending or []))
            self.handle.flush()
            self.pending = None
        except OSError:
            self.stop_copying()

    def stop_copying(self):
        if self.handle is not None:
            try:
                self.handle.close()
            except OSError:
                pass
        self.handle, self.pending = None, None
