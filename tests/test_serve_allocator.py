"""The C allocator's thresholds of a worker (serve/allocator.py): what they change, when they are
left alone, and that ``serve`` sets them (or not) as ``[server] malloc_tuning`` says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stirshaken.serve import allocator

from tests.test_serve_support import FileServer, ServeProcess, make_pki, serve_port, serve_toml

# a records database batch as the database thread makes it: 1,000 JSON lines joined, then encoded
_BATCHES = """
import resource, sys
from stirshaken.serve import allocator
if sys.argv[1] == "tuned":
    print(allocator.tune(True, {}), file=sys.stderr)
lines = ['{"call_id":"%04d","reason":"%s"}' % (i, "x" * 500) for i in range(1000)]
def batch():
    return len(",".join(lines).encode())
for _ in range(5):
    batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    batch()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 100)
"""

glibc = pytest.mark.skipif(not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only")


def _faults(mode: str) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        env.pop(k, None)
    p = subprocess.run([sys.executable, "-c", _BATCHES, mode], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    return float(p.stdout)


@glibc
def test_tuned_thresholds_keep_a_batch_from_faulting_fresh_pages() -> None:
    """With glibc's defaults each batch (~0.5 MB text and its UTF-8 copy) is mapped anew: over a
    hundred page faults a batch; with the worker's thresholds, the heap is reused: next to none."""
    plain, tuned = _faults("plain"), _faults("tuned")
    assert plain > 100, plain
    assert tuned < 5, tuned


def test_tuning_is_left_off_or_to_the_environment() -> None:
    assert allocator.tune(False) == "C library defaults ([server] malloc_tuning = false)"
    assert allocator.tune(True, {"MALLOC_TRIM_THRESHOLD_": "0"}) == "as the environment sets them (MALLOC_TRIM_THRESHOLD_)"
    assert (allocator.tune(True, {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"})
            == "as the environment sets them (GLIBC_TUNABLES)")
    assert (allocator.tune(True, {"GLIBC_TUNABLES": "glibc.pthread.rseq=0:glibc.malloc.trim_threshold=1"})
            == "as the environment sets them (GLIBC_TUNABLES)")
    # the environment's thresholds are in force whatever malloc_tuning says, and the line says so
    assert allocator.tune(False, {"MALLOC_MMAP_THRESHOLD_": "2000000"}) == "as the environment sets them (MALLOC_MMAP_THRESHOLD_)"
    # other tunables (of malloc too: arena_max) leave the thresholds to serve, as MALLOC_ARENA_MAX does
    for env in ({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
                {"GLIBC_TUNABLES": "xglibc.malloc.trim_threshold=1"}, {"MALLOC_ARENA_MAX": "2"}):
        assert allocator.tune(True, env).startswith(("mmap threshold", "C library defaults (not glibc)")), env


@pytest.mark.parametrize("setting, expected", [("", "mmap threshold 4 MiB, trim threshold 8 MiB"),
                                                ("malloc_tuning = false", "C library defaults ([server] malloc_tuning = false)")])
def test_each_worker_says_what_it_did_with_the_allocator(tmp_path: Path, setting: str, expected: str) -> None:
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "") or any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        pytest.skip("the environment sets the allocator itself")
    if not setting and not os.confstr("CS_GNU_LIBC_VERSION"):
        pytest.skip("glibc only")
    pki = make_pki(tmp_path)
    x5u = FileServer(pki.dir)
    port = serve_port()
    toml = serve_toml(pki, x5u, http=port, workers=2).replace("[server]\n", f"[server]\n{setting}\n", 1)
    p = ServeProcess(tmp_path, toml, port)
    try:
        deadline = time.monotonic() + 10
        ready: list[dict[str, object]] = []
        while time.monotonic() < deadline and len(ready) < 2:
            ready = [d for d in map(json.loads, (x for x in p.log.read_text().splitlines() if x.startswith("{")))
                     if d.get("msg") == "worker ready"]
            time.sleep(0.1)
    finally:
        p.stop()
        x5u.close()
    assert len(ready) == 2 and all(d["malloc"] == expected for d in ready), ready


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_names_the_options_that_need_a_restart(tmp_path: Path, workers: int) -> None:
    """SIGHUP reloads the signers and trust; options of [server], [verification], [inventory] and
    [records] changed in the file take effect at a restart only: one WARNING line names them (the
    supervisor's, with several workers), and none when nothing of the kind changed."""
    import signal

    pki = make_pki(tmp_path)
    x5u = FileServer(pki.dir)
    port = serve_port()
    toml = serve_toml(pki, x5u, http=port, workers=workers)
    p = ServeProcess(tmp_path, toml, port)
    try:
        def warnings() -> list[dict[str, object]]:
            return [d for d in map(json.loads, (x for x in p.log.read_text().splitlines() if x.startswith("{")))
                    if d.get("msg") == "configuration changes that take effect only at a restart"]

        p.proc.send_signal(signal.SIGHUP)  # nothing changed
        time.sleep(1.0)
        assert warnings() == []
        p.config.write_text(toml.replace("[server]\n", "[server]\nmalloc_tuning = false\n", 1) + '\n[records]\nlog = false\n')
        p.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not warnings() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        got = warnings()
    finally:
        p.stop()
        x5u.close()
    assert len(got) == 1 and got[0]["options"] == "[server] malloc_tuning, [records] log" and got[0]["level"] == "WARNING", got
