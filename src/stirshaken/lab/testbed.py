"""``stirshaken testbed``: a complete SHAKEN ecosystem on loopback, in one process.

It starts an STI-PA (:mod:`stirshaken.pki.pa`), an STI-CA (:mod:`stirshaken.pki.ca`, ACME) and an STI-CR
(:mod:`stirshaken.pki.cr`) over HTTPS with certificates from a locally generated TLS root, provisions
SP certificates through ACME with SPC tokens (RFC 9448, ATIS-1000080 §6.3.5), revokes one of them
through ACME ``revokeCert`` (forwarded to the STI-PA, which re-issues the SHAKEN CRL), then signs
sample calls and verifies them through an STI-VS on loopback (the ATIS-1000082 REST API of
:mod:`stirshaken.serve.rest` over :class:`stirshaken.vs.verifier.Verifier`), which fetches the x5u from the STI-CR
over HTTPS, the trusted-CA list from the STI-PA and the SHAKEN CRL:

=====================  =============================================
good call              TN-Validation-Passed
spoofed caller ID      438 Invalid Identity Header
tampered PASSporT      438 Invalid Identity Header, TN-Validation-Failed
revoked certificate    437 Unsupported Credential, TN-Validation-Failed
=====================  =============================================

Everything lives under one state directory (keys 0600, SQLite database, TLS material).  The
TLS helpers live in :mod:`stirshaken.pki.tls`, shared with the ``pa``/``ca``/``cr`` serve commands.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from cryptography import x509

from stirshaken.core import certificates as certs
from stirshaken.core.b64 import b64url_decode, b64url_encode
from stirshaken.core.keys import load_private_key, write_secret
from stirshaken.core.passport import Signer
from stirshaken.net.http import client_session
from stirshaken.pki.acme_client import AcmeClient
from stirshaken.pki.ca import CAConfig, CertificateAuthority
from stirshaken.pki.cr import CertificateRepository, DBPublisher
from stirshaken.pki.enrollment import AcmeConfig, obtain_certificate
from stirshaken.pki.pa import PAConfig, PolicyAdministrator
from stirshaken.pki.pa_client import PAClient
from stirshaken.pki.store import Database, sqlite_url
from stirshaken.pki.tls import TLSFiles, bind, make_tls, serve_on, url_of

ORIG, DEST, SPOOFED = "12155551212", "12155551213", "12155559999"


# --- the testbed ------------------------------------------------------------------------------


@dataclass
class Verdict:
    case: str
    expected: str
    verstat: str
    sip_code: int | None
    reason: str | None
    description: str | None
    ok: bool


@dataclass
class Testbed:
    """All services of the testbed and what they provisioned."""

    __test__ = False  # not a pytest class

    state_dir: Path
    db_url: str | None = None
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)
    ocn: str = "1234"
    runners: list[web.AppRunner] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    pa: PolicyAdministrator | None = None
    ca: CertificateAuthority | None = None
    cr: CertificateRepository | None = None
    tls: TLSFiles | None = None
    admin_password: str = ""
    sp_password: str = ""
    cr_token: str = ""
    vs_sock: socket.socket | None = None

    async def start(self) -> None:
        sd = self.state_dir
        sd.mkdir(parents=True, exist_ok=True)
        self.tls = make_tls(sd / "tls")
        saved = sd / "testbed.json"
        prev = orjson.loads(saved.read_bytes()) if saved.exists() else {}
        ports = {**prev.get("ports", {}), **self.ports}
        socks = {n: bind(self.host, int(ports.get(n, 0))) for n in ("pa", "ca", "cr", "vs")}
        self.vs_sock = socks.pop("vs")
        self.urls = {n: url_of(s) for n, s in socks.items()}
        self.admin_password = prev.get("admin_password") or secrets.token_urlsafe(12)
        self.sp_password = prev.get("sp_password") or secrets.token_urlsafe(12)
        self.cr_token = prev.get("cr_token") or secrets.token_urlsafe(16)
        write_secret(  # passwords and the upload token: 0600 from creation
            saved,
            orjson.dumps(
                {"ports": {**{n: s.getsockname()[1] for n, s in socks.items()}, "vs": self.vs_sock.getsockname()[1]}, "admin_password": self.admin_password,
                 "sp_password": self.sp_password, "cr_token": self.cr_token},
                option=orjson.OPT_INDENT_2,
            ),
        )
        db = Database(self.db_url or sqlite_url(str(sd / "testbed.db")))
        self.pa = PolicyAdministrator.create(PAConfig(base_url=self.urls["pa"], state_dir=sd / "pa"), db)
        self.pa.add_account("admin", self.admin_password, ocn=None, admin=True)
        self.pa.add_account(f"sp-{self.ocn}", self.sp_password, ocn=self.ocn)
        self.cr = CertificateRepository(db, self.urls["cr"], upload_tokens={self.cr_token: f"sp-{self.ocn}"})
        ca_config = CAConfig(
            base_url=self.urls["ca"], state_dir=sd / "ca", token_authority=self.urls["pa"], crl_url=self.pa.crl_url,
            crl_issuer=self.pa.crl_issuer, pa_trust_anchors=[self.pa.keys.root], ca_bundle=str(self.tls.root),
        )
        self.ca = CertificateAuthority.create(ca_config, db, publisher=DBPublisher(self.cr), revocation_hook=self._forward_revocation)
        self.pa.add_trusted_ca(self.ca.keys.root)
        ctx = self.tls.server_context()
        for name, app in (("pa", self.pa.app), ("ca", self.ca.app), ("cr", self.cr.app)):
            self.runners.append(await serve_on(app, socks[name], ctx))

    async def _forward_revocation(self, cert: x509.Certificate, reason: int | None) -> None:
        """STI-CA -> STI-PA: the PA keeps the single SHAKEN CRL (ATIS-1000080 §6.3.3)."""
        async with client_session(ca_bundle=self.tls.root if self.tls else None) as s:
            pa = PAClient(self.urls["pa"], s)
            await pa.login("admin", self.admin_password)
            await pa.revoke(serial=cert.serial_number, reason=str(reason) if reason is not None else None)

    async def stop(self) -> None:
        if self.vs_sock is not None:
            self.vs_sock.close()
            self.vs_sock = None
        for r in reversed(self.runners):
            await r.cleanup()
        self.runners.clear()
        if self.pa is not None:
            self.pa.db.close()

    def acme_config(self, name: str) -> AcmeConfig:
        assert self.tls is not None
        return AcmeConfig(
            directory_url=self.urls["ca"] + "/acme/directory", pa_url=self.urls["pa"], ocn=self.ocn,
            username=f"sp-{self.ocn}", password=self.sp_password, state_dir=self.state_dir / name,
            ca_bundle=str(self.tls.root), cr_url=self.urls["cr"], cr_token=self.cr_token,
        )

    async def revoke_via_acme(self, name: str) -> None:
        cfg = self.acme_config(name)
        leaf = certs.load_certificates((cfg.state_dir / "sp.pem").read_bytes())[0]
        async with client_session(ca_bundle=cfg.ca_bundle) as s:
            client = AcmeClient(cfg.directory_url, load_private_key(cfg.state_dir / "account.key"), s)
            await client.register(only_existing=True)
            await client.revoke(leaf, reason=1)

    def verifier_config(self) -> Any:
        from stirshaken.vs.verifier import VerifierConfig

        assert self.pa is not None and self.tls is not None
        return VerifierConfig(
            crl_signers=[str(self.state_dir / "pa" / "pa-crl.pem")],  # the STI-PA CRL signer: not a path anchor
            ca_list=self.urls["pa"] + "/api/v1/ca-list",
            ca_list_trust=[str(self.state_dir / "pa" / "pa-root.pem")],
            crls=[self.pa.crl_url],
            allow_private_x5u=True,
            x5u_ca_bundle=str(self.tls.root),
        )


def _tamper(identity: str) -> str:
    """Change the PASSporT's attestation without re-signing."""
    token, params = identity.split(";", 1)
    h, p, s = token.split(".")
    claims = json.loads(b64url_decode(p))
    claims["attest"] = "B" if claims.get("attest") == "A" else "A"
    p2 = b64url_encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{h}.{p2}.{s};{params}"


async def start_vs(tb: Testbed, port: int = 0) -> str:
    """Start the STI-VS: the ATIS-1000082 REST API (:mod:`stirshaken.serve.rest`) over
    :class:`stirshaken.vs.verifier.Verifier`, on loopback HTTPS; returns its verification URL."""
    from stirshaken.serve.metrics import Metrics
    from stirshaken.serve.http import make_app
    from stirshaken.serve.rest import VERIFICATION_PATH, RestAPI
    from stirshaken.vs.verifier import CallInfo, Verifier

    assert tb.tls is not None
    verifier = Verifier(tb.verifier_config())
    api = RestAPI(signing=None, verifier=verifier, metrics=Metrics(), call_info=CallInfo)
    app = make_app(api)

    async def _close(_app: web.Application) -> None:
        await verifier.aclose()

    app.on_cleanup.append(_close)
    sock = tb.vs_sock or bind(tb.host, port)
    tb.vs_sock = None
    tb.runners.append(await serve_on(app, sock, tb.tls.server_context()))
    tb.urls["vs"] = url_of(sock)
    return tb.urls["vs"] + VERIFICATION_PATH


async def run_cases(tb: Testbed, good: Any, revoked: Any) -> list[Verdict]:
    """Sign sample calls with the provisioned certificates and verify them through the STI-VS
    REST service (which fetches each x5u from the STI-CR over HTTPS, the CA list and the CRL
    from the STI-PA)."""
    url = await start_vs(tb)
    good_signer = Signer(load_private_key(good.key_path), good.x5u)
    bad_signer = Signer(load_private_key(revoked.key_path), revoked.x5u)
    ident = good_signer.identity(orig=ORIG, dest=[DEST], attest="A")
    cases = [
        ("good call", "TN-Validation-Passed", None, ident, ORIG),
        ("spoofed caller ID", "438", 438, ident, SPOOFED),
        ("tampered PASSporT", "438 TN-Validation-Failed", 438, _tamper(ident), ORIG),
        ("revoked certificate", "437 TN-Validation-Failed", 437, bad_signer.identity(orig=ORIG, dest=[DEST], attest="A"), ORIG),
    ]
    out: list[Verdict] = []
    async with client_session(ca_bundle=tb.tls.root if tb.tls else None) as s:
        for name, expected, code, identity, orig in cases:
            req = {"verificationRequest": {"from": {"tn": orig}, "to": {"tn": [DEST]}, "time": int(time.time()), "identity": identity}}
            async with s.post(url, json=req, headers={"Accept": "application/json"}) as r:
                body = await r.json()
            res = body.get("verificationResponse", {}) if isinstance(body, dict) else {}
            verstat, sip = str(res.get("verstat", f"HTTP {r.status}")), res.get("reasoncode")
            if code is None:
                ok = verstat == "TN-Validation-Passed"
            else:
                ok = sip == code and ("TN-Validation-Failed" not in expected or verstat == "TN-Validation-Failed")
            out.append(Verdict(name, expected, verstat, sip, res.get("reasontext"), res.get("reasondesc"), ok))
    return out


async def provision(tb: Testbed) -> tuple[Any, Any]:
    """Two SP certificates through ACME; the second one is revoked via ACME revokeCert."""
    good = await obtain_certificate(tb.acme_config("sp"))
    revoked = await obtain_certificate(tb.acme_config("sp-revoked"))
    await tb.revoke_via_acme("sp-revoked")
    return good, revoked


async def run_testbed(
    state_dir: Path | None = None,
    *,
    keep_running: bool = False,
    ports: dict[str, int] | None = None,
    db_url: str | None = None,
    console: Any = None,
) -> list[Verdict]:
    """Start, provision, verify, print; returns the verdicts (``keep_running``: then serve until cancelled)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(Console().width, 110))
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if state_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="stirshaken-testbed-")
        state_dir = Path(tmp.name)
    tb = Testbed(state_dir=state_dir, db_url=db_url, ports=dict(ports or {}))
    t0 = time.monotonic()
    try:
        await tb.start()
        console.print(f"STI-PA {tb.urls['pa']}  STI-CA {tb.urls['ca']}/acme/directory  STI-CR {tb.urls['cr']}/", highlight=False)
        good, revoked = await provision(tb)
        console.print(f"provisioned SP certificate {good.serial:x} (SPC {tb.ocn}) via ACME tkauth-01; x5u {good.x5u}", highlight=False)
        console.print(f"revoked SP certificate {revoked.serial:x} via ACME revokeCert -> STI-PA CRL", highlight=False)
        verdicts = await run_cases(tb, good, revoked)
        table = Table(title="STI-VS verdicts")
        table.add_column("call", no_wrap=True)
        table.add_column("verstat", no_wrap=True)
        table.add_column("SIP", no_wrap=True)
        table.add_column("as expected", no_wrap=True)
        for v in verdicts:
            table.add_row(
                v.case, v.verstat, f"{v.sip_code} {v.reason}" if v.sip_code else "-",
                "[green]yes[/green]" if v.ok else f"[red]NO[/red] (expected {v.expected})",
            )
        console.print(table)
        for v in verdicts:  # one plain line each, whatever the terminal width
            code = f"{v.sip_code} {v.reason}" if v.sip_code else "-"
            console.print(f"{v.case}: verstat={v.verstat} sip={code} ({v.description or 'ok'})", highlight=False, soft_wrap=True)
        console.print(f"testbed finished in {time.monotonic() - t0:.1f} s; state in {state_dir}", highlight=False)
        if keep_running:
            console.print("services keep running (Ctrl-C to stop):", highlight=False)
            console.print(f"  STI-PA  {tb.urls['pa']}  (ca-list {tb.urls['pa']}/api/v1/ca-list, crl {tb.urls['pa']}/download/v1/crl)", highlight=False)
            console.print(f"  STI-CA  {tb.urls['ca']}/acme/directory", highlight=False)
            console.print(f"  STI-CR  {tb.urls['cr']}/  (x5u {good.x5u})", highlight=False)
            console.print(f"  STI-VS  {tb.urls['vs']}/stir/v1/verification  (ATIS-1000082 REST)", highlight=False)
            console.print(f"  TLS root {tb.tls.root if tb.tls else ''}", highlight=False)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, stop.set)
                except (NotImplementedError, RuntimeError):  # pragma: no cover - not the main thread
                    pass
            await stop.wait()
        return verdicts
    finally:
        await tb.stop()
        if tmp is not None:
            tmp.cleanup()
