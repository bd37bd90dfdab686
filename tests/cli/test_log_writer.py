"""The log handler of kubetasks processes: lines below WARNING are written in batches by a
writer thread, soon; a warning at once, after what came before it; nothing is lost at exit;
and the text is what :class:`logging.Formatter` writes."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import time

from kubetasks import logwriter

FORMAT = "%(asctime)s %(levelname)s %(name)s %(process)d: %(message)s"


def handler_on(stream: io.StringIO, delay: float) -> tuple[logging.Logger, logging.Handler]:
    handler = logwriter.BatchedStreamHandler(stream, delay=delay)
    handler.setFormatter(logwriter.TimeCachingFormatter(FORMAT))
    log = logging.getLogger(f"test.logwriter.{id(stream)}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    return log, handler


def test_info_lines_come_together_within_the_delay_and_a_warning_at_once() -> None:
    stream = io.StringIO()
    log, handler = handler_on(stream, delay=1.0)
    try:
        start = time.monotonic()
        for i in range(100):
            log.info("task %d succeeded", i)
        assert stream.getvalue() == ""  # nothing written by the calls themselves
        while stream.getvalue().count("\n") < 100:
            assert time.monotonic() - start < 5, stream.getvalue()
            time.sleep(0.01)
        # a delay after the first line, not line by line
        assert time.monotonic() - start >= 1.0
        log.info("before the warning")
        log.warning("disk full")
        lines = stream.getvalue().splitlines()  # at once: no wait
        assert [line.split(": ", 1)[1] for line in lines[-2:]] == [
            "before the warning",
            "disk full",
        ]
    finally:
        log.removeHandler(handler)
        handler.close()


def test_the_text_is_what_logging_formatter_writes() -> None:
    stream = io.StringIO()
    log, handler = handler_on(stream, delay=0.01)
    try:
        log.info("id %s in %.2fs", "t-1", 0.5)
        handler.flush()
        (line,) = stream.getvalue().splitlines()
    finally:
        log.removeHandler(handler)
        handler.close()
    # The same record through the standard library's formatter: same text, same time.
    stamp = line.split(" INFO ")[0]
    record = logging.LogRecord(log.name, logging.INFO, __file__, 1, "id %s in %.2fs",
                               ("t-1", 0.5), None)  # fmt: skip
    record.created = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S"))
    record.msecs = int(stamp[20:])
    assert line == logging.Formatter(FORMAT).format(record)


def test_lines_waiting_at_exit_are_written_with_the_process_id() -> None:
    code = (
        "import logging, os; from kubetasks import logwriter;"
        "logwriter.setup(logging.INFO, '%(process)d %(levelname)s %(message)s');"
        "[logging.getLogger('x').info('line %d', i) for i in range(500)];"
        "print(os.getpid())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    pid = done.stdout.strip()
    assert done.stderr.splitlines() == [f"{pid} INFO line {i}" for i in range(500)]
