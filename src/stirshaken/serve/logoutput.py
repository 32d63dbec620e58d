"""A worker's log lines on stderr without ever stalling it.

A blocking ``write`` to stderr waits as long as the reader of stderr does not read: a container
runtime whose log driver is in its default blocking mode and falls behind, journald restarting, a
``| tee`` whose disk is full.  Measured before this module (``serve`` with its stderr a pipe nobody
read, REST signing with records on): the pipe's 64 KiB filled after 160 requests and the worker
answered nothing more.  A call must never wait for a log line (issue 13: "calls are never delayed").

:class:`LogOutput` is a text stream (``write``/``flush``) for the log handlers of a worker (and of
the ACME renewer): ``write`` only queues the text; a thread of its own writes it to the file
descriptor (whole lines, at most :data:`ATOMIC` bytes a ``write(2)``), so that a blocked
``write(2)`` holds that thread alone.  What waits is bounded
(:data:`PENDING_MAX` bytes); past that, lines are dropped and counted
(``stirshaken_log_lines_dropped_total``), and one line says how many once stderr is read again.
While one write has waited more than :data:`STALLED` seconds, or for :data:`RECENT` seconds after
a drop, :attr:`LogOutput.problem` gives ``/healthz`` its reason.

The supervisor has no thread: it forks workers, and a thread holding a lock at a ``fork`` would
leave the child that lock held forever.  Its few lines go through a :class:`DroppingOutput`
instead, which writes each line at once or drops it: measured before it (two workers, stderr a pipe
nobody read), the supervisor's own next line ("worker exited; restarting", "stopped") waited
forever: a killed worker was never started again and SIGTERM never ended ``serve``.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Iterator

__all__ = ["ATOMIC", "BATCH", "PENDING_MAX", "RECENT", "STALLED", "DroppingOutput", "LogOutput"]

#: bytes of log text waiting for stderr, at most, per process (about 32,000 records)
PENDING_MAX = 16 * 1024 * 1024
#: seconds one write to stderr may wait before ``/healthz`` says the log output is stalled
STALLED = 5.0
#: seconds during which dropped lines keep ``/healthz`` degraded
RECENT = 60.0
#: bytes the thread takes from the queue at a time (at least one text): what it holds beyond the
#: queue stays this small; taking the whole queue at once made a worker's memory three times
#: ``log_buffer`` when stderr was read again (256 MiB queued: 800 MiB)
BATCH = 65536
#: bytes of one ``write(2)``: a write to a pipe of at most this many bytes is atomic (POSIX
#: ``write``; Linux pipe(7)), so workers sharing the pipe of their stderr never cut one another's
#: lines (batches of 64 KiB written at once did: 3 lines in 1,600 with two workers read late),
#: and a process exiting while its write waits leaves no half line
ATOMIC = select.PIPE_BUF

log = logging.getLogger("stirshaken.serve")


def _report_drops(dropped: int, total: int) -> None:
    """The one line that counts lines dropped, once stderr takes lines again (through the
    handlers, hence in their format)."""
    log.warning("log lines dropped: stderr was not read", extra={"dropped": dropped, "dropped_total": total})


class LogOutput:
    """Text written to file descriptor ``fd`` (stderr by default) by a thread of its own.

    ``limit``: bytes waiting, at most (:data:`PENDING_MAX`).  Thread-safe: any thread may
    :meth:`write` (text) or :meth:`write_bytes` (text already in UTF-8: the per-call records).
    :meth:`drain` waits for what was written, within a timeout (seconds)."""

    def __init__(self, fd: int = 2, limit: int = PENDING_MAX):
        self.fd = fd
        self.limit = limit
        self._parts: deque[bytes] = deque()
        #: bytes queued or being written (bounded by ``limit``)
        self._pending = 0
        self._cond = threading.Condition(threading.Lock())
        self._broken = False  # stderr gone (EPIPE, EBADF): text is dropped from then on
        #: lines dropped since the start (the counter), and not yet reported by a line of their own
        self.dropped_lines = 0
        self._unreported = 0
        self._last_drop = 0.0  # time.monotonic() of the last drop
        self._busy_since = 0.0  # time.monotonic() when the write in progress began (0.0: none)
        #: whether writes are cut to :data:`ATOMIC` bytes: not for a regular file, where one write
        #: is placed whole (Linux serialises writes sharing a file offset) and the cutting would
        #: cost 32 system calls and a Python loop per 256 records instead of one call
        try:
            self._cut = not stat.S_ISREG(os.fstat(fd).st_mode)
        except OSError:
            self._cut = True
        self._thread = threading.Thread(target=self._run, name="stirshaken-log-output", daemon=True)
        self._thread.start()

    # --- the stream (any thread) ----------------------------------------------------------------

    def write(self, text: str) -> int:
        """Queue ``text`` (:meth:`write_bytes` of its UTF-8, a character that has none as its
        ``\\`` escape)."""
        self.write_bytes(text.encode("utf-8", "backslashreplace"))
        return len(text)

    def write_bytes(self, data: bytes) -> None:
        """Queue ``data`` (whole lines of UTF-8 text); drops it (counting its lines) when it would
        take the bytes waiting past :attr:`limit`."""
        n = len(data)
        with self._cond:
            if self._broken or self._pending and self._pending + n > self.limit:  # (one text larger than the limit still goes alone)
                self._drop(data.count(b"\n") or 1)
                return
            self._parts.append(data)
            self._pending += n
            self._cond.notify()

    def flush(self) -> None:
        """Nothing to do: the thread writes as soon as it can (see :meth:`drain`)."""

    def _drop(self, lines: int) -> None:
        """Count ``lines`` dropped; with ``_cond`` held."""
        self.dropped_lines += lines
        self._unreported += lines
        self._last_drop = time.monotonic()

    # --- health and metrics ---------------------------------------------------------------------

    @property
    def problem(self) -> str | None:
        """``/healthz``'s reason while a write to stderr has waited more than :data:`STALLED`
        seconds, or for :data:`RECENT` seconds after lines were dropped; else None."""
        busy = self._busy_since
        now = time.monotonic()
        if busy and now - busy > STALLED:
            return f"log output stalled: a write to stderr has waited more than {STALLED:g} s"
        if self._last_drop and now - self._last_drop < RECENT:
            return f"log lines dropped in the last {RECENT:.0f} s: stderr was not read"
        return None

    def counters(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """The counter family of the output (for :class:`~stirshaken.serve.metrics.Metrics`)."""
        return {"stirshaken_log_lines_dropped_total": {(): self.dropped_lines}}

    # --- the thread -----------------------------------------------------------------------------

    def drain(self, timeout: float = 2.0) -> bool:
        """Wait until what was written so far is on the file descriptor, at most ``timeout``
        seconds (a process about to exit: stderr may not be read); True when it is.  The thread
        stays, for the lines of the exit itself."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending and not self._broken:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _take(self) -> tuple[list[bytes], int]:
        """The oldest texts, about :data:`BATCH` bytes (at least one), and their size; with
        ``_cond`` held."""
        parts: list[bytes] = []
        size = 0
        while self._parts and (not parts or size + len(self._parts[0]) <= BATCH):
            text = self._parts.popleft()
            parts.append(text)
            size += len(text)
        return parts, size

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._parts:
                    self._cond.wait()
                parts, size = self._take()
            written = True
            data = b"".join(parts)  # (about BATCH bytes, or one text: _take)
            for chunk in _pieces(data) if self._cut else (data,):
                written = self._write(chunk) and written
            del parts, data
            with self._cond:
                self._pending -= size
                unreported = 0
                if written:  # (else the line counting them would be lost too, and counted, and so on)
                    unreported, self._unreported = self._unreported, 0
                self._cond.notify_all()  # (drain)
            if unreported:
                _report_drops(unreported, self.dropped_lines)

    def _write(self, chunk: bytes) -> bool:
        """Write ``chunk``; False when it could not be (its lines counted as dropped).  EPIPE or
        EBADF: stderr is gone, text is dropped from then on; any other error (ENOSPC: the disk
        behind a redirection is full) loses this chunk only (before, it too discarded every later
        line, uncounted, after the disk was freed)."""
        data = memoryview(chunk)
        self._busy_since = time.monotonic()
        try:
            while data and not self._broken:
                try:
                    data = data[os.write(self.fd, data):]
                except BlockingIOError:  # a non-blocking descriptor (set so by another process): wait
                    time.sleep(0.01)
                except OSError as exc:  # the log is not worth a crash
                    self._broken = exc.errno in (errno.EPIPE, errno.EBADF)
                    break
        finally:
            self._busy_since = 0.0
        if not data:
            return True
        with self._cond:
            self._drop(bytes(data).count(b"\n") or 1)
        return False



class DroppingOutput:
    """Text written to file descriptor ``fd`` at once, or dropped (lines counted): never waited
    for, and no thread (the supervisor, which forks).

    A pipe (a container runtime's log) is written through a descriptor of its own opened
    non-blocking (``/proc/self/fd/N``: the flag is not shared with the workers writing the same
    pipe); a socket (journald) with ``MSG_DONTWAIT``; anything else (a file, a terminal) as it is.
    A line of at most :data:`ATOMIC` bytes goes whole or not at all."""

    def __init__(self, fd: int = 2):
        self.fd = self._given = fd
        self.dropped_lines = 0
        self._unreported = 0
        self._sock: socket.socket | None = None
        mode = os.fstat(fd).st_mode
        if stat.S_ISFIFO(mode):
            try:
                self.fd = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no /proc: as it is
                pass
        elif stat.S_ISSOCK(mode):
            self._sock = socket.socket(fileno=os.dup(fd))

    def write(self, text: str) -> int:
        """Write ``text`` now, or drop it and count its lines."""
        data = text.encode("utf-8", "backslashreplace")
        try:
            while data:
                n = self._sock.send(data, socket.MSG_DONTWAIT) if self._sock is not None else os.write(self.fd, data)
                data = data[n:]
        except OSError:  # full (BlockingIOError) or gone
            lines = text.count("\n") or 1
            self.dropped_lines += lines
            self._unreported += lines
            return len(text)
        if self._unreported:
            unreported, self._unreported = self._unreported, 0
            _report_drops(unreported, self.dropped_lines)
        return len(text)

    def flush(self) -> None:
        """Nothing to do: :meth:`write` writes at once."""

    def close(self) -> None:
        """Close the descriptor or socket of its own, if any."""
        if self._sock is not None:
            self._sock.close()
        elif self.fd != self._given:
            os.close(self.fd)


def _pieces(data: bytes) -> Iterator[bytes]:
    """``data`` (whole lines) cut after newlines into the longest pieces of at most :data:`ATOMIC`
    bytes (a line longer than that is a piece of its own)."""
    start, end = 0, len(data)
    while end - start > ATOMIC:
        cut = data.rfind(b"\n", start, start + ATOMIC) + 1
        if cut <= start:  # one line longer than ATOMIC
            cut = data.find(b"\n", start + ATOMIC) + 1 or end
        yield data[start:cut]
        start = cut
    if start < end:
        yield data[start:] if start else data
