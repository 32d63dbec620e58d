"""Valid samples for the seeds: a PKI made with the project's own issuance code, its signer.

:func:`material` makes it once per process in a temporary directory (removed at exit; the
atheris driver names one with ``STIRSHAKEN_FUZZ_MATERIAL``, as its process ends without running
exit handlers): a root,
an intermediate, an SP certificate (SPC 1234) and a delegate certificate (TN and range entries,
RFC 9060), the intermediate's CRL revoking one serial, a CSR, the SP key as PEM, the
:class:`~stirshaken.core.passport.Signer` of the SP, and a ``stirshaken serve`` TOML file that
names those files.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

X5U = "https://cr.example.net/sp-chain.pem"
ORIG, DEST = "12155551212", "12155551213"
#: RFC 4122 example UUID, fixed so that the seeds repeat
ORIGID = "123e4567-e89b-42d3-a456-426614174000"


@dataclass
class Material:
    dir: Path
    root: Any
    inter: Any
    inter_key: Any
    sp: Any
    sp_key: Any
    delegate: Any
    crl: Any
    csr: Any
    signer: Any
    at: dt.datetime
    config_path: Path

    @property
    def chain(self) -> list[Any]:
        return [self.sp, self.inter]

    def identity(self, **over: Any) -> str:
        args: dict[str, Any] = {"orig": ORIG, "dest": [DEST], "attest": "A", "iat": int(time.time()), "origid": ORIGID}
        args.update(over)
        return str(self.signer.identity(**args))


_MATERIAL: list[Material] = []


def serve_toml(d: Path, *, extra_signing: str = "", extra_verification: str = "") -> str:
    """A ``stirshaken serve`` configuration over the files in ``d`` (every table present)."""
    return "\n".join([
        "[server]", 'http = "127.0.0.1:0"', 'sip_signing = "127.0.0.1:0"', "workers = 1", 'log_level = "INFO"', "",
        "[signing]", f'key = "{d / "sp.key"}"', f'x5u = "{X5U}"', 'spc = "1234"', "max_iat_skew = 86400", extra_signing, "",
        "[[signing.tenant]]", 'name = "other"', 'spc = "5678"', f'key = "{d / "sp.key"}"', 'x5u = "https://cr.example.net/other.pem"',
        'tns = ["1999"]', "",
        "[verification]", f'trust_anchors = ["{d / "root.pem"}"]', f'crls = ["{d / "inter.crl"}"]', "max_age = 60",
        extra_verification, "",
    ]) + "\n"


def material() -> Material:
    """The shared material of this process (made on first use)."""
    if _MATERIAL:
        return _MATERIAL[0]
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from stirshaken.core import certificates as certs
    from stirshaken.core.keys import write_private_key
    from stirshaken.core.passport import Signer
    from stirshaken.core.tnauthlist import TN, SPC, TNAuthList, TNRange

    where = os.environ.get("STIRSHAKEN_FUZZ_MATERIAL")  # the atheris driver's directory (its process ends without atexit)
    if where:
        d = Path(where)
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    else:
        d = Path(tempfile.mkdtemp(prefix="stirshaken-fuzz-"))
        atexit.register(shutil.rmtree, d, True)
    crl_url = "http://127.0.0.1:9/inter.crl"
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = certs.create_root(root_key)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = certs.create_intermediate(inter_key, root, root_key, crl_url=crl_url)
    sp_key = ec.generate_private_key(ec.SECP256R1())
    sp = certs.create_sp_certificate(sp_key, inter, inter_key, tnauthlist=TNAuthList.for_spc("1234"), crl_url=crl_url)
    del_key = ec.generate_private_key(ec.SECP256R1())
    delegate = certs.create_sp_certificate(
        del_key, inter, inter_key, crl_url=crl_url,
        tnauthlist=TNAuthList((SPC("1234"), TNRange("12155551200", 100), TN("12155550000"), TN("*#1"))),
    )
    revoked = certs.create_sp_certificate(ec.generate_private_key(ec.SECP256R1()), inter, inter_key, spc="1234", crl_url=crl_url)
    crl = certs.create_crl(inter, inter_key, [(revoked.serial_number, certs.utcnow() - dt.timedelta(hours=1))])
    csr = certs.build_csr(sp_key, tnauthlist=TNAuthList((SPC("1234"), TNRange("12155551200", 100))))
    write_private_key(d / "sp.key", sp_key, public=False)
    (d / "root.pem").write_bytes(certs.pem([root]))
    (d / "sp-chain.pem").write_bytes(certs.pem([sp, inter]))
    (d / "inter.crl").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    config_path = d / "stirshaken.toml"
    config_path.write_text(serve_toml(d))
    m = Material(
        dir=d, root=root, inter=inter, inter_key=inter_key, sp=sp, sp_key=sp_key, delegate=delegate, crl=crl, csr=csr,
        signer=Signer(sp_key, X5U), at=certs.utcnow() + dt.timedelta(minutes=5), config_path=config_path,
    )
    _MATERIAL.append(m)
    return m
