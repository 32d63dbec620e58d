"""A stderr nobody reads never stalls ``serve`` (serve/logoutput.py): calls are answered, lines past
``[server] log_buffer`` are dropped and counted, ``/healthz`` says why, and one line tells how many
were dropped once stderr is read again.  Before, a worker stopped answering after 160 REST signing
requests once the pipe of its stderr was full."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest

from stirshaken.serve import logoutput
from stirshaken.serve.logoutput import LogOutput

from tests.test_serve_config import _children
from tests.test_serve_records import health, http, metric, wait_for
from tests.test_serve_support import DEST, ORIG, FileServer, make_pki, serve_command, serve_port, serve_toml, wait_tcp


@pytest.fixture(scope="module")
def pki_x5u(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("logout")
    pki = make_pki(d / "pki")
    x5u = FileServer(d / "pki")
    yield pki, x5u, d
    x5u.close()


def drain(fd: int, into: bytearray, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        into += chunk


# --- through serve ---------------------------------------------------------------------------------


def test_a_stderr_nobody_reads_stalls_no_call(pki_x5u: Any) -> None:
    pki, x5u, d = pki_x5u
    port = serve_port()
    config = d / "unread.toml"
    config.write_text(serve_toml(pki, x5u, http=port).replace("[server]", "[server]\nlog_buffer = 65536", 1))
    r, w = os.pipe()
    proc = subprocess.Popen(serve_command() + ["--config", str(config)], stdout=w, stderr=w, start_new_session=True)
    os.close(w)
    got = bytearray()
    stop = threading.Event()
    reader = threading.Thread(target=drain, args=(r, got, stop), daemon=True)
    try:
        wait_tcp(port, proc=proc)
        time.sleep(0.3)
        body = {"signingRequest": {"attest": "A", "orig": {"tn": ORIG}, "dest": {"tn": [DEST]}, "iat": int(time.time())}}
        for i in range(600):  # ~500 characters of record each: far more than the pipe (64 KiB) and the buffer hold
            status, _ = http(port, "/stir/v1/signing", body, {"X-RequestID": f"call-{i}"})
            assert status == 200, i
        dropped = wait_for(lambda: metric(port, "stirshaken_log_lines_dropped_total"))
        doc = wait_for(lambda: (lambda h: h if h["status"] == "degraded" else None)(health(port)), timeout=10.0)
        assert "log lines dropped in the last 60 s: stderr was not read" in doc["reasons"], doc
        reader.start()  # stderr is read again: what waited comes, then the line that counts the drops
        wait_for(lambda: b"log lines dropped: stderr was not read" in got)
        dropped = metric(port, "stirshaken_log_lines_dropped_total")  # (lines still batched at the first reading were dropped after it)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        stop.set()
        os.close(r)
    lines = bytes(got).decode().splitlines()
    docs = [json.loads(line) for line in lines]  # every line whole: dropped lines are dropped whole
    note = next(doc for doc in docs if doc["msg"] == "log lines dropped: stderr was not read")
    assert note["level"] == "WARNING" and 1 <= note["dropped"] <= note["dropped_total"]
    calls = [doc["call_id"] for doc in docs if doc.get("logger") == "stirshaken.records"]
    assert calls and len(calls) + dropped >= 600 and calls == sorted(calls, key=lambda c: int(c.split("-")[1])), calls[:5]


def test_a_write_held_long_makes_healthz_say_stalled(pki_x5u: Any) -> None:
    """With the buffer large enough to drop nothing, a write to stderr waiting more than
    ``STALLED`` seconds (5) is reported as it waits."""
    pki, x5u, d = pki_x5u
    port = serve_port()
    config = d / "stalled.toml"
    config.write_text(serve_toml(pki, x5u, http=port))
    r, w = os.pipe()
    proc = subprocess.Popen(serve_command() + ["--config", str(config)], stdout=w, stderr=w, start_new_session=True)
    os.close(w)
    try:
        wait_tcp(port, proc=proc)
        body = {"signingRequest": {"attest": "A", "orig": {"tn": ORIG}, "dest": {"tn": [DEST]}, "iat": int(time.time())}}
        for _ in range(300):
            assert http(port, "/stir/v1/signing", body)[0] == 200
        doc = wait_for(lambda: (lambda h: h if h["status"] == "degraded" else None)(health(port)), timeout=15.0)
        assert doc["reasons"] == [f"log output stalled: a write to stderr has waited more than {logoutput.STALLED:g} s"], doc
        assert metric(port, "stirshaken_log_lines_dropped_total") == 0
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        os.close(r)


# --- the stream itself -----------------------------------------------------------------------------


def test_text_is_written_in_order() -> None:
    r, w = os.pipe()
    out = LogOutput(w)
    for i in range(1000):
        out.write(f"line {i}\n")
    assert out.drain(5.0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        assert f.read().decode().splitlines() == [f"line {i}" for i in range(1000)]


def test_a_full_buffer_drops_whole_texts_and_counts_their_lines() -> None:
    r, w = os.pipe()
    out = LogOutput(w, limit=100_000)
    t0 = time.monotonic()
    for i in range(5000):  # 5000 x 100 characters: the pipe (64 KiB) and the buffer (100,000) fill
        out.write(f"{i:099d}\n")
    assert time.monotonic() - t0 < 2.0  # nothing waited for the reader
    assert out.dropped_lines > 0 and out.problem == "log lines dropped in the last 60 s: stderr was not read"
    assert out.counters() == {"stirshaken_log_lines_dropped_total": {(): out.dropped_lines}}
    got = bytearray()
    reader = threading.Thread(target=drain, args=(r, got, threading.Event()), daemon=True)
    reader.start()
    assert out.drain(5.0)
    os.close(w)  # the reader reads to the end
    reader.join(5.0)
    os.close(r)
    lines = bytes(got).decode().splitlines()
    note = [line for line in lines if not line.isdigit()]
    assert note == [], note  # (the line counting the drops goes to the logging handlers, not here)
    assert len(lines) + out.dropped_lines == 5000 and all(len(line) == 99 for line in lines)
    assert [int(x) for x in lines] == sorted(int(x) for x in lines)


def test_a_write_waiting_past_stalled_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logoutput, "STALLED", 0.2)
    r, w = os.pipe()
    out = LogOutput(w)
    out.write("x" * 200_000)  # more than the pipe holds: the thread's write waits
    time.sleep(0.5)
    assert out.problem == "log output stalled: a write to stderr has waited more than 0.2 s"
    got = bytearray()
    stop = threading.Event()
    threading.Thread(target=drain, args=(r, got, stop), daemon=True).start()
    wait_for(lambda: len(got) == 200_000)
    wait_for(lambda: out.problem is None)
    assert out.drain(2.0)
    stop.set()
    assert out.problem is None and out.dropped_lines == 0
    os.close(w)
    os.close(r)


def test_a_stderr_gone_is_no_crash() -> None:
    r, w = os.pipe()
    os.close(r)  # EPIPE on every write (Python ignores SIGPIPE)
    out = LogOutput(w)
    out.write("a line\n")
    assert out.drain(2.0)
    out.write("another\n")  # discarded at once
    assert out.drain(0.1) and out._thread.is_alive()
    os.close(w)


def test_drain_is_bounded_when_nobody_reads() -> None:
    r, w = os.pipe()
    out = LogOutput(w)
    out.write("y" * 200_000)
    t0 = time.monotonic()
    assert not out.drain(0.3)
    assert time.monotonic() - t0 < 1.0
    os.close(r)  # the blocked write ends (EPIPE)
    assert out.drain(2.0)
    os.close(w)


def test_two_writers_sharing_a_pipe_read_late_never_cut_a_line() -> None:
    """Two workers share the pipe of their stderr; it is read late.  Each write is at most
    PIPE_BUF bytes and ends at the end of a line (atomic, pipe(7)); before, the thread wrote all
    it held at once and lines of one worker came cut by the other's (3 in 1,600 through serve).
    Texts of 20 lines (the records' batches) are cut between lines."""
    r, w = os.pipe()
    outs = [LogOutput(w), LogOutput(w)]
    for i in range(300):
        for k, out in enumerate(outs):
            out.write("".join(f"{k}:{i}:{j}:" + "z" * 300 + "\n" for j in range(20)))
    got = bytearray()
    reader = threading.Thread(target=drain, args=(r, got, threading.Event()), daemon=True)
    reader.start()
    assert all(out.drain(20.0) for out in outs)
    os.close(w)  # the reader reads to the end
    reader.join(10.0)
    lines = bytes(got).decode().splitlines()
    assert len(lines) == 2 * 300 * 20
    bad = [line[:40] for line in lines if not (line.count(":") == 3 and line.endswith(":" + "z" * 300))]
    assert bad == []
    for k in (0, 1):  # in order within a writer
        mine = [tuple(map(int, line.split(":")[1:3])) for line in lines if line.startswith(f"{k}:")]
        assert mine == sorted(mine) and len(mine) == 6000
    os.close(r)


def test_reading_again_costs_no_copy_of_the_whole_buffer() -> None:
    """20 MB wait while stderr is not read; once it is read, the thread takes them
    ``BATCH`` characters at a time: what it allocates beyond the queue stays small.  Before, it
    joined and encoded the whole queue at once (256 MiB waiting: 800 MiB resident)."""
    r, w = os.pipe()
    out = LogOutput(w, limit=64 * 1024 * 1024)
    for i in range(40_000):
        out.write(f"{i:0499d}\n")
    time.sleep(0.2)

    def discard() -> None:
        try:
            while os.read(r, 65536):
                pass
        except OSError:
            pass

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        threading.Thread(target=discard, daemon=True).start()
        assert out.drain(20.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        os.close(w)
    time.sleep(0.1)  # (the reader sees the end)
    os.close(r)
    assert peak < 4 * 1024 * 1024, peak


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("closed", [(2,), (1, 2)])
def test_serve_with_stderr_closed_serves_and_stops(pki_x5u: Any, workers: int, closed: tuple[int, ...]) -> None:
    """``stirshaken serve ... 2>&-`` (and ``>&- 2>&-``): Python makes ``sys.stderr`` None; the
    log output is then /dev/null.  Before, the worker crashed in ``setup_logging`` (serve exited
    with 1, saying nothing); and a single worker, whose event loop descriptor became 2, aborted at
    its stop (libuv's assertion, SIGABRT)."""
    pki, x5u, d = pki_x5u
    port = serve_port()
    config = d / f"closed{workers}.toml"
    config.write_text(serve_toml(pki, x5u, http=port, workers=workers))
    proc = subprocess.Popen(serve_command() + ["--config", str(config)], stdout=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=lambda: [os.close(fd) for fd in closed])
    try:
        wait_tcp(port, proc=proc)
        body = {"signingRequest": {"attest": "A", "orig": {"tn": ORIG}, "dest": {"tn": [DEST]}, "iat": int(time.time())}}
        for _ in range(5):
            assert http(port, "/stir/v1/signing", body)[0] == 200
        assert health(port)["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_the_supervisor_never_waits_for_stderr(pki_x5u: Any) -> None:
    """Two workers, stderr a pipe nobody reads, filled by their lines: a worker killed is started
    again and SIGTERM ends serve within shutdown_timeout + the workers' drain (2 s).  Before, the
    supervisor's own line ("worker exited; restarting") waited for the reader forever: no worker
    was started again and SIGTERM never ended serve."""
    pki, x5u, d = pki_x5u
    port = serve_port()
    config = d / "supervisor.toml"
    config.write_text(serve_toml(pki, x5u, http=port, workers=2).replace("[server]", "[server]\nlog_buffer = 65536\nshutdown_timeout = 1.0", 1))
    r, w = os.pipe()
    proc = subprocess.Popen(serve_command() + ["--config", str(config)], stdout=w, stderr=w, start_new_session=True)
    os.close(w)
    try:
        wait_tcp(port, proc=proc)
        body = {"signingRequest": {"attest": "A", "orig": {"tn": ORIG}, "dest": {"tn": [DEST]}, "iat": int(time.time())}}
        for _ in range(600):  # far more than the pipe holds
            assert http(port, "/stir/v1/signing", body)[0] == 200
        wait_for(lambda: metric(port, "stirshaken_log_lines_dropped_total"))
        workers = wait_for(lambda: (lambda c: c if len(c) == 2 else None)(_children(proc.pid)))
        os.kill(workers[0], signal.SIGKILL)
        wait_for(lambda: (lambda c: len(c) == 2 and workers[0] not in c)(_children(proc.pid)), timeout=10.0)
        wait_tcp(port, proc=proc)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert time.monotonic() - t0 < 1.0 + 2.0 + 2.0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        os.close(r)


def test_dropping_output_writes_at_once_or_drops() -> None:
    """The supervisor's stream: a full pipe drops the line (counted), never waits; once the pipe
    is read, the next line goes, followed by one line counting the drops (through the handlers)."""
    r, w = os.pipe()
    out = logoutput.DroppingOutput(w)
    notes: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = notes.append  # type: ignore[method-assign]
    logoutput.log.addHandler(handler)
    try:
        t0 = time.monotonic()
        for i in range(2000):  # 200 KB: more than the pipe holds
            out.write(f"{i:099d}\n")
        assert time.monotonic() - t0 < 2.0 and out.dropped_lines > 0 and not notes
        got = bytearray(os.read(r, 1 << 20))  # all the pipe holds
        out.write("after\n")
        assert [n.getMessage() for n in notes] == ["log lines dropped: stderr was not read"]
        assert notes[0].dropped == out.dropped_lines  # type: ignore[attr-defined]
    finally:
        logoutput.log.removeHandler(handler)
    out.close()  # (its own descriptor of the pipe)
    os.close(w)
    while chunk := os.read(r, 65536):
        got += chunk
    os.close(r)
    lines = bytes(got).decode().splitlines()
    assert lines[-1] == "after" and len(lines) - 1 + out.dropped_lines == 2000


def test_a_failed_write_loses_its_lines_only_and_counts_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC (the disk behind ``2>file`` full) loses the lines of that write, counted; once the
    disk has room the next lines go, then the line counting the drops.  Before, the first ENOSPC
    made every later line vanish, uncounted, with /healthz ok."""
    r, w = os.pipe()
    full = threading.Event()
    full.set()
    write = os.write

    def disk(fd: int, data: Any) -> int:
        if fd == w and full.is_set():
            raise OSError(28, "No space left on device")
        return write(fd, data)

    monkeypatch.setattr(logoutput.os, "write", disk)
    notes: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = notes.append  # type: ignore[method-assign]
    logoutput.log.addHandler(handler)
    try:
        out = LogOutput(w)
        out.write("lost 1\nlost 2\n")
        assert out.drain(2.0)
        assert out.dropped_lines == 2 and out.problem == "log lines dropped in the last 60 s: stderr was not read" and not notes
        full.clear()
        out.write("kept\n")
        assert out.drain(2.0)
        wait_for(lambda: notes, timeout=2.0)
    finally:
        logoutput.log.removeHandler(handler)
    assert notes[0].dropped == 2  # type: ignore[attr-defined]
    assert os.read(r, 100) == b"kept\n"
    os.close(w)
    os.close(r)


@pytest.mark.parametrize(("value", "error"), [
    ("2000000000", "2000000000 is not between 65536 and 1073741824 bytes"),  # (was "1.07374e+09")
    ("100", "100 is not between 65536 and 1073741824 bytes"),
    ('"16M"', "must be an integer, got '16M'"),
])
def test_a_bad_log_buffer_is_one_clear_line(tmp_path: Path, value: str, error: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f'[server]\nhttp = "127.0.0.1:{serve_port()}"\nlog_buffer = {value}\n')
    done = subprocess.run(serve_command() + ["--check", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"error: [server].log_buffer: {error}\n")


def test_two_writers_of_one_regular_file_keep_their_lines_whole(tmp_path: Path) -> None:
    """A regular file is written a batch at a time (not cut to PIPE_BUF): writes sharing its
    offset are placed whole, so two outputs (two workers' threads) still never cut a line."""
    fd = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    outs = [LogOutput(fd), LogOutput(fd)]
    assert not outs[0]._cut

    def worker(i: int) -> None:
        for j in range(0, 3000, 100):
            outs[i].write("".join(f"{i}-{j + k:04d}-{'x' * 490}\n" for k in range(100)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(o.drain(10.0) for o in outs)
    os.close(fd)
    lines = (tmp_path / "log").read_text().splitlines()
    assert len(lines) == 6000 and all(len(line) == 497 for line in lines)
    for i in (0, 1):
        assert [line[:6] for line in lines if line.startswith(f"{i}-")] == [f"{i}-{j:04d}" for j in range(3000)]
