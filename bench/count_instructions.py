#!/usr/bin/env python3
"""Instructions the Python code executes around one ES256 operation, counted by callgrind.

    .venv/bin/python bench/count_instructions.py [--calls 800]

Timings on a shared VM drift with the host's load; instruction counts do not (``valgrind
--tool=callgrind`` counts the same total for the same program and input).  This runs a loop of
``Signer.identity_for`` (sign) and of ``verification.verify_offline`` with a
``VerificationCache`` (verify, certificate already validated) under callgrind with the ES256 operation itself stubbed out, once with 1 call and once
with ``1 + calls`` calls, and prints the difference per call: the cost of everything around the
operation, which is what a change to the hot path should lower.  Needs valgrind (Debian package
``valgrind``); takes about a minute.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _loop(mode: str, n: int) -> None:
    """The measured program (run under callgrind)."""
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_core import X5U, setup  # noqa: E402

    from stirshaken.core import passport as P  # noqa: E402
    from stirshaken.core import verification as V  # noqa: E402

    key, credential = setup()
    orig, dest = "12155551212", ["12155551213"]
    signer = P.Signer(key, X5U)
    identities = [signer.identity(orig=orig, dest=dest, attest="A") for _ in range(200)]
    now = time.time()
    der = key.sign(b"x", P.ECDSA_SHA256)

    class _StubKey:  # the signing operation replaced by a constant DER signature
        def sign(self, data: bytes, algorithm: object) -> bytes:
            return der

    stub_signer = P.Signer(key, X5U)
    stub_signer.key = _StubKey()  # type: ignore[assignment]
    P.verify_signature = lambda *a, **k: None  # the verification operation replaced by nothing
    if mode == "sign":
        for _ in range(n):
            stub_signer.identity_for(orig, dest, "A")
    else:
        cache = V.VerificationCache()  # owned by the caller, as the STI-VS Verifier owns its own
        for i in range(n):
            V.verify_offline(identities[i % 200], credential, orig=orig, dest=dest, now=now, cache=cache)


def _count(mode: str, n: int) -> int:
    p = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__, "--loop", mode, str(n)],
        capture_output=True, text=True, cwd=ROOT,
        # a fixed string-hash seed: dict layouts (and so the count) would otherwise vary by ~1k
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    m = re.search(r"Collected : (\d+)", p.stderr)
    if p.returncode != 0 or m is None:
        raise SystemExit(f"callgrind run failed:\n{p.stderr[-2000:]}")
    return int(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=800)
    ap.add_argument("--loop", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.loop:
        _loop(args.loop[0], int(args.loop[1]))
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    for mode, what in (("sign", "Signer.identity_for, signing stubbed"), ("verify", "verify_offline, signature check stubbed")):
        per_call = (_count(mode, 1 + args.calls) - _count(mode, 1)) / args.calls
        print(f"{mode:6s} {per_call:10,.0f} instructions per call  ({what})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
