"""Log lines written in batches by a writer thread, not one write per line.

A worker logs two lines per task at INFO (started; ended, with its outcome and time), as
Celery and huey do. Through :class:`logging.StreamHandler` each line was written and flushed
on its own: at a few thousand tasks a second about half of a worker's CPU per no-op task
(154 us with the lines, 79 us without, ``bench/drain_profile.py``), and a wake-up of the
pipe's reader (the container runtime) per line. :class:`BatchedStreamHandler` formats the
record and keeps the line; a writer thread writes what gathered in one call at most
:data:`DELAY` seconds later. A record at WARNING or above is written at once, after
everything logged before it, so a failure reaches the log even if the process dies just
after it; at exit (``logging.shutdown``) and on :meth:`~BatchedStreamHandler.flush` the rest
is written too.

What is lost, at most, when the process is killed outright: the INFO lines of the last
:data:`DELAY` seconds.
"""

from __future__ import annotations

import collections
import collections.abc
import logging
import os
import threading
import time
from typing import IO

#: Seconds a record below WARNING may wait before it is written.
DELAY = 0.05
#: Lines that are written at once when that many wait (a burst is not held in memory).
LIMIT = 2000


class TimeCachingFormatter(logging.Formatter):
    """A :class:`logging.Formatter` that formats the date and time of one second once
    (``time.strftime`` per record was a tenth of a line's cost); the text is the same."""

    def __init__(self, fmt: str | None = None) -> None:
        super().__init__(fmt)
        self._cached: tuple[int, str] = (-1, "")
        """(second, its text): replaced whole, so threads formatting at once never pair one
        second's text with another's."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached = self._cached
        if cached[0] != second:
            cached = (second, time.strftime(self.default_time_format, self.converter(second)))
            self._cached = cached
        return f"{cached[1]},{int(record.msecs):03d}"  # default_msec_format's "%s,%03d"


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """:class:`logging.StreamHandler` whose lines below WARNING are written by a writer
    thread, in batches, within :data:`DELAY` seconds."""

    def __init__(self, stream: IO[str] | None = None, *, delay: float = DELAY) -> None:
        super().__init__(stream)
        self.delay = delay
        self._waiting: collections.deque[str] = collections.deque()
        """Lines formatted and not written yet."""
        self._wake = threading.Event()
        self._closed = False
        self._start_writer()
        # A forked child has no writer thread: it gets one of its own.
        os.register_at_fork(after_in_child=self._start_writer)

    def _start_writer(self) -> None:
        thread = threading.Thread(target=self._write_loop, name="kubetasks-log", daemon=True)
        thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        # Formatted here, on the thread that logs: a writer thread formatting a batch would
        # hold the GIL for milliseconds, and an event loop woken by Redis in that time
        # waits for it (a drain at INFO ran at half the rate of one at WARNING that way).
        # Handler.handle holds self.lock here; the writer thread takes it to write.
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._waiting.append(line)
        if record.levelno >= logging.WARNING or self._closed or len(self._waiting) >= LIMIT:
            self._write_waiting()
        elif len(self._waiting) == 1:
            self._wake.set()

    def _write_waiting(self) -> None:
        """Write every waiting line in one write (the caller holds the lock)."""
        if not self._waiting:
            return
        text = "".join(self._waiting)
        self._waiting.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": text}))

    def _write_loop(self) -> None:
        while not self._closed:
            self._wake.wait()
            time.sleep(self.delay)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_waiting()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.flush()
        super().close()


_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def _record_with_cached_pid(
    base: collections.abc.Callable[..., logging.LogRecord],
) -> collections.abc.Callable[..., logging.LogRecord]:
    """A record factory that fills ``process`` from a pid read once per process (and again
    in a forked child), not by ``os.getpid()`` per record: a system call, a tenth of a
    worker's time per task line on a virtual machine (py-spy)."""

    def make(*args: object, **kwargs: object) -> logging.LogRecord:
        record = base(*args, **kwargs)
        record.process = _pid
        return record

    return make


def setup(level: int, fmt: str) -> logging.Handler:
    """The root logger at ``level`` with one :class:`BatchedStreamHandler` on stderr (what
    :func:`logging.basicConfig` would set up, unless the root logger has a handler already:
    then that one is kept, and returned)."""
    root = logging.getLogger()
    root.setLevel(level)
    if logging.logProcesses:
        logging.logProcesses = False  # the factory below sets it, from the cached pid
        logging.setLogRecordFactory(_record_with_cached_pid(logging.getLogRecordFactory()))
    if root.handlers:
        return root.handlers[0]
    handler = BatchedStreamHandler()
    handler.setFormatter(TimeCachingFormatter(fmt))
    root.addHandler(handler)
    return handler
