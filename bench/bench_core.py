#!/usr/bin/env python3
"""Single-core sign and verify throughput of the core, next to ``openssl speed ecdsap256``.

    .venv/bin/python bench/bench_core.py [--seconds 3] [--profile sign|verify] [--no-openssl]

* sign   = one full SHAKEN Identity header value: claims (new UUID origid, iat now), deterministic
           JSON, ES256 (RFC 6979 deterministic and random-k both measured), base64url, parameters.
* verify = full Identity header parse + PASSporT decode (strict) + ES256 signature check + the
           decision by ``verify.verify_offline`` with an already validated credential
           (``ValidatedCredential``; the certificate is loaded once, as a VS cache would hold it).

OpenSSL is measured in the same run (``openssl speed -seconds N ecdsap256``) and the ratios
printed; the target is >= 0.7 of OpenSSL's sign and verify rates.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import cryptography  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from stirshaken import certificates as C  # noqa: E402
from stirshaken.passport import Signer  # noqa: E402
from stirshaken.tnauthlist import TNAuthList  # noqa: E402
from stirshaken.verify import verify_offline  # noqa: E402

X5U = "https://cr.example.net/sp-chain.pem"


def setup():
    rk, ik, sk = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = C.create_root(rk)
    inter = C.create_intermediate(ik, root, rk, crl_url="https://sti-pa.example.net/crl")
    sp = C.create_sp_certificate(sk, inter, ik, tnauthlist=TNAuthList.for_spc("1234"), crl_url="https://sti-pa.example.net/crl")
    credential = C.TrustStore([root]).validate([sp, inter])
    return sk, credential


def rate(fn, seconds: float) -> float:
    """Calls per second of CPU time of ``fn`` over about ``seconds`` (batched to keep timer
    overhead out).  CPU time, like ``openssl speed`` (which divides by user CPU time unless given
    ``-elapsed``), so that other load on a shared machine does not skew the ratio."""
    for _ in range(200):  # warm-up
        fn()
    n, batch = 0, 256
    clock = time.process_time
    start = clock()
    wall_deadline = time.perf_counter() + 4 * seconds  # bound the wall time on a busy machine
    while True:
        for _ in range(batch):
            fn()
        n += batch
        now = clock()
        if now - start >= seconds or time.perf_counter() >= wall_deadline:
            return n / (now - start)


def openssl_speed(seconds: int) -> tuple[float, float, str] | None:
    exe = shutil.which("openssl")
    if exe is None:
        return None
    p = subprocess.run([exe, "speed", "-seconds", str(seconds), "ecdsap256"], capture_output=True, text=True,
                       env={**os.environ, "OPENSSL_ia32cap": os.environ.get("OPENSSL_ia32cap", "")} if "OPENSSL_ia32cap" in os.environ else None)
    m = re.search(r"256 bits ecdsa \(nistp256\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", p.stdout)
    version = subprocess.run([exe, "version"], capture_output=True, text=True).stdout.strip()
    if m is None:
        return None
    return float(m.group(1)), float(m.group(2)), version


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--profile", choices=["sign", "verify"], help="cProfile one loop and print the top functions")
    ap.add_argument("--no-openssl", action="store_true")
    args = ap.parse_args()

    key, credential = setup()
    det = Signer(key, X5U, deterministic=True)
    rnd = Signer(key, X5U, deterministic=False)
    orig, dest = "12155551212", ["12155551213"]
    identity = det.identity(orig=orig, dest=dest, attest="A")
    now = time.time()
    assert verify_offline(identity, credential, orig=orig, dest=dest, now=now).ok

    def sign_det():
        det.identity(orig=orig, dest=dest, attest="A")

    def sign_rnd():
        rnd.identity(orig=orig, dest=dest, attest="A")

    def verify():
        r = verify_offline(identity, credential, orig=orig, dest=dest, now=now)
        if not r.ok:  # pragma: no cover
            raise SystemExit(f"verification failed: {r.description}")

    if args.profile:
        fn = {"sign": sign_det, "verify": verify}[args.profile]
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(20000):
            fn()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)
        return 0

    print(f"python {platform.python_version()}  cryptography {cryptography.__version__}  {platform.machine()}  "
          f"cpus {os.cpu_count()}  (single core, {args.seconds:g} s per loop)")
    results = {
        "sign (deterministic RFC 6979)": rate(sign_det, args.seconds),
        "sign (random k)": rate(sign_rnd, args.seconds),
        "verify (parse+decode+sig+decision)": rate(verify, args.seconds),
    }
    ossl = None if args.no_openssl else openssl_speed(int(max(1, round(args.seconds))))
    print()
    print(f"{'operation':40s} {'ops/s':>10s} {'us/op':>8s} {'openssl ops/s':>14s} {'ratio':>6s}")
    for name, r in results.items():
        ref = None
        if ossl is not None:
            ref = ossl[1] if name.startswith("verify") else ossl[0]
        ratio = f"{r / ref:6.2f}" if ref else "   n/a"
        refs = f"{ref:14.0f}" if ref else f"{'n/a':>14s}"
        print(f"{name:40s} {r:10.0f} {1e6 / r:8.1f} {refs} {ratio}")
    if ossl is not None:
        print(f"\nreference: `openssl speed -seconds {int(max(1, round(args.seconds)))} ecdsap256` ({ossl[2]}): "
              f"sign {ossl[0]:.0f}/s, verify {ossl[1]:.0f}/s; target ratio >= 0.70")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
