"""Fresh, distinct Identity header values for the SIP verification load (bench/bench_serve.sh).

Writes a sipp injection file (``-inf``): a ``SEQUENTIAL`` line, then one line per call holding
``token;Date`` (sipp fields 0 and 1: the PASSporT, the Date header value; the scenario adds
``;info=<x5u>;alg=ES256;ppt=shaken``, as sipp splits fields on ``;``).  Every PASSporT has its own origid, so none is a replay
of another (RFC 8224 §6.2 step 4); iat and Date are now, so the file must be used within the
verifier's freshness window (60 s by default).

    python bench/make_identities.py KEY X5U ORIG DEST COUNT OUT
"""

from __future__ import annotations

import sys
import time
from email.utils import formatdate
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from stirshaken import Signer


def main() -> int:
    key_path, x5u, orig, dest, count, out = sys.argv[1:7]
    key = load_pem_private_key(Path(key_path).read_bytes(), None)
    signer = Signer(key, x5u)  # type: ignore[arg-type]
    now = int(time.time())
    date = formatdate(now, usegmt=True)
    lines = ["SEQUENTIAL"]
    for _ in range(int(count)):
        token = signer.identity_for(orig, dest, "A", now).split(";", 1)[0]
        lines.append(f"{token};{date}")
    Path(out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
