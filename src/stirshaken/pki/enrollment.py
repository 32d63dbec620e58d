"""The SP's certificate flow: obtain, store, renew and deploy its SHAKEN certificate.

The whole ATIS-1000080 §6.3.5 / RFC 9448 flow (docs/requirements.md AC-01) in
:func:`obtain_certificate`: STI-PA login and an SPC token bound to the ACME account key
fingerprint (PA-03/PA-04, RFC 9448 §4, :mod:`stirshaken.pki.pa_client`), the ACME order and its
``tkauth-01`` answer (RFC 8555 §7, RFC 9448 §5, :mod:`stirshaken.pki.acme_client`), finalize with
a CSR for a fresh P-256 key written 0600 (ATIS-1000080 §6.4.1), download, and publication at the
STI-CR (CR-01..CR-03).  :func:`ensure_certificate` / :func:`renew_forever` renew
``renew_before_days`` before expiry (AC-05); :func:`run_deploy_hook` runs an operator's command
after an issuance; :func:`save_settings` / :func:`load_settings` / :func:`managed_state_dirs`
keep what ``stirshaken acme renew`` / ``acme list`` need.  Sessions come from
:mod:`stirshaken.net.http`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

import aiohttp
import orjson
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core import certificates as certs
from stirshaken.core.jose import account_key_fingerprint
from stirshaken.core.keys import generate_private_key, load_private_key, public_key_pem, public_path_for, write_private_key, write_secret
from stirshaken.core.tnauthlist import TNAuthList
from stirshaken.net.http import client_session
from stirshaken.pki.acme import CERTIFICATE_LOCATION_HEADER, PEM_CHAIN, PUBLISH_ERROR_HEADER, TKAUTH01, AcmeProblem, Authorization, Order
from stirshaken.pki.acme_client import AcmeClient, short_text
from stirshaken.pki.pa_client import PAClient, PAClientError

log = logging.getLogger("stirshaken.pki.acme_client")  # the SP flow's logger, kept from before the split

#: ``state_dir/current`` -> ``archive/<serial hex>``: the active ``key.pem``, ``cert.pem``, ``chain.pem``
CURRENT = "current"
#: the non-secret options of ``stirshaken acme`` kept for ``acme renew`` / ``acme list``
SETTINGS = "acme.json"

#: total seconds for one request of the SP flow (STI-PA, STI-CA, STI-CR)
FLOW_TIMEOUT = 30.0


class PublishError(Exception):
    """The certificate was issued and stored, but neither the STI-CA nor this client could put
    the chain on the STI-CR, so no x5u points at it (the message says why)."""


class DeployHookError(Exception):
    """The ``--deploy-hook`` command failed (its exit status and the end of its stderr)."""


@dataclass
class AcmeConfig:
    """Where and as whom an SP obtains its SHAKEN certificate.

    ``eab_kid`` / ``eab_hmac_key``: the external account binding the STI-CA issued (RFC 8555 §7.3.4).
    ``state_dir`` holds ``account.key`` (0600), ``account.json``, ``sp.key`` (0600), ``sp.pem``
    (leaf), ``sp-chain.pem`` (leaf + intermediates) and ``cert.json`` (x5u URL, serial, expiry).
    When the STI-CA publishes the chain itself (``X-Shaken-Certificate-Location``) that URL becomes
    the x5u; otherwise ``cr_url``/``cr_token`` publish it with an authenticated PUT to the STI-CR.
    """

    directory_url: str
    pa_url: str
    ocn: str
    username: str
    password: str
    state_dir: Path
    ca_bundle: str | None = None
    cr_url: str | None = None
    cr_token: str | None = None
    identifier_encoding: str = "base64url"
    contact: list[str] = field(default_factory=list)
    org: str = "STI Participant"
    days: int | None = None
    eab_kid: str | None = None
    eab_hmac_key: str | None = None


@dataclass
class CertificateStatus:
    """The SP's current certificate (what :func:`ensure_certificate` returns)."""

    key_path: Path
    cert_path: Path
    chain_path: Path
    x5u: str | None
    serial: int
    not_after: dt.datetime
    renewed: bool = False

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(key_path=str(self.key_path), cert_path=str(self.cert_path), chain_path=str(self.chain_path))
        d.update(serial=format(self.serial, "x"), not_after=self.not_after.isoformat())
        return d


def _account_key(state_dir: Path) -> ec.EllipticCurvePrivateKey:
    path = state_dir / "account.key"
    if path.exists():
        return load_private_key(path)
    key = generate_private_key()
    write_private_key(path, key, public=False)
    return key


def current_certificate(state_dir: Path) -> CertificateStatus | None:
    """The certificate recorded in ``state_dir``, or None."""
    meta = state_dir / "cert.json"
    if not meta.exists():
        return None
    try:
        info = orjson.loads(meta.read_bytes())
        leaf = certs.load_certificates((state_dir / "sp.pem").read_bytes())[0]
    except Exception:  # unreadable, not JSON or no certificate: nothing recorded
        return None
    return CertificateStatus(
        key_path=state_dir / "sp.key", cert_path=state_dir / "sp.pem", chain_path=state_dir / "sp-chain.pem",
        x5u=info.get("x5u"), serial=leaf.serial_number, not_after=leaf.not_valid_after_utc,
    )


async def _publish(session: aiohttp.ClientSession, cfg: AcmeConfig, name: str, chain_pem: bytes) -> str:
    assert cfg.cr_url is not None
    url = f"{cfg.cr_url.rstrip('/')}/{name}"
    headers = {"Content-Type": PEM_CHAIN}
    if cfg.cr_token:
        headers["Authorization"] = f"Bearer {cfg.cr_token}"
    async with session.put(url, data=chain_pem, headers=headers) as resp:
        if resp.status not in (200, 201, 204):
            raise PAClientError(f"STI-CR refused the upload: HTTP {resp.status}: {short_text(await resp.text())}")
    return url


async def obtain_certificate(cfg: AcmeConfig, *, session: aiohttp.ClientSession | None = None) -> CertificateStatus:
    """Run the whole ATIS-1000080 §6.3.5 / RFC 9448 flow once and store the result in ``state_dir``."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    own = session is None
    if session is None:
        session = client_session(ca_bundle=cfg.ca_bundle, timeout=FLOW_TIMEOUT, connect_timeout=None)
    try:
        account_key = _account_key(cfg.state_dir)
        tnal = TNAuthList.for_spc(cfg.ocn)
        client = AcmeClient(cfg.directory_url, account_key, session, identifier_encoding=cfg.identifier_encoding)
        # 0. the STI-CA's directory first: a wrong --directory is named before the STI-PA is asked
        # (a refused connection is retried as the STI-PA login's is: a lab STI-CA may be starting)
        deadline = time.monotonic() + PAClient.STARTUP_GRACE
        while True:
            try:
                await client.directory()
                break
            except aiohttp.ClientConnectorError as exc:
                if not isinstance(exc.os_error, ConnectionRefusedError) or time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.25)
        # 1. SPC token from the STI-PA, bound to the ACME account key (RFC 9448 §4, PA-04/PA-05)
        pa = PAClient(cfg.pa_url, session)
        await pa.login(cfg.username, cfg.password)
        tok = await pa.spc_token(cfg.ocn, client.identifier_value(tnal), account_key_fingerprint(account_key))
        # 2. account and order (RFC 8555 §7.3, §7.4; RFC 9448 §3)
        await client.register(cfg.contact, eab=(cfg.eab_kid, cfg.eab_hmac_key) if cfg.eab_kid and cfg.eab_hmac_key else None)
        (cfg.state_dir / "account.json").write_bytes(orjson.dumps({"url": client.account_url, "directory": cfg.directory_url}))
        not_after = None
        if cfg.days:
            not_after = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=cfg.days)
        order_url, order = await client.new_order(tnal, not_after=not_after)
        # 3. tkauth-01 (RFC 9448 §5)
        for authz_url in order.authorizations:
            authz = (await client.get(authz_url)).parse(Authorization, authz_url)
            if authz.status == "valid":
                continue
            chall = authz.challenge(TKAUTH01)
            if chall is None or chall.tkauth_type != "atc":
                raise AcmeProblem("unsupportedIdentifier", "no tkauth-01/atc challenge offered", 0)
            await client.answer_tkauth(chall.url, tok["token"])
            authz = await client.poll(authz_url, ("valid", "invalid"), Authorization)
            if authz.status != "valid":
                err = next((c.problem for c in authz.challenges if c.error), None)
                raise err or AcmeProblem("unauthorized", "authorization failed", 0)
        order = await client.poll(order_url, ("ready", "valid", "invalid"), Order)
        if order.status == "invalid":
            raise order.problem or AcmeProblem("unauthorized", "order invalid", 0)
        # 4. finalize with a CSR for a new P-256 key (ATIS-1000080 §6.4.1)
        sp_key = generate_private_key()
        csr = certs.build_csr(sp_key, tnauthlist=tnal, org=cfg.org)
        order = await client.finalize(order_url, order, csr)
        if order.certificate is None:
            raise AcmeProblem("malformed", f"{order_url}: the valid order has no certificate URL", 0)
        chain_pem, res = await client.download(order.certificate)
        chain = certs.load_certificates(chain_pem)
        leaf = chain[0]
        if leaf.public_key().public_numbers() != sp_key.public_key().public_numbers():
            raise AcmeProblem("serverInternal", "issued certificate is not for our key", 0)
        # 5. publish at the STI-CR (CR-01..CR-03); a failure is reported after the files are stored
        x5u = res.headers.get(CERTIFICATE_LOCATION_HEADER)
        publish_error: str | None = None
        if cfg.cr_url and not x5u:
            try:
                x5u = await _publish(session, cfg, f"{cfg.ocn}-{leaf.serial_number:x}.pem", chain_pem)
            except (PAClientError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                publish_error = f"the upload to the STI-CR {cfg.cr_url} failed: {exc or type(exc).__name__}"
        elif not x5u and res.headers.get(PUBLISH_ERROR_HEADER):
            publish_error = res.headers[PUBLISH_ERROR_HEADER] + " (give --cr-url/--cr-token to upload it yourself)"
        # 6. store: key first (0600), then certificate files, then the metadata that points at them;
        #    each file is written aside and renamed into place, so a reader (a signer reloading)
        #    sees whole files, and at worst a key that does not match sp.pem yet (it checks)
        sd = cfg.state_dir
        tmp = sd / ".sp.key.new"
        write_private_key(tmp, sp_key, public=False)
        tmp.replace(sd / "sp.key")
        public_path_for(sd / "sp.key").write_bytes(public_key_pem(sp_key))
        meta = {"x5u": x5u, "serial": format(leaf.serial_number, "x"), "not_after": leaf.not_valid_after_utc.isoformat(),
                "order": order_url, "certificate": order.certificate, "crl": tok.get("crl")}
        leaf_pem = certs.pem([leaf])
        for name, data in (("sp.pem", leaf_pem), ("sp-chain.pem", chain_pem), ("cert.json", orjson.dumps(meta))):
            (sd / f".{name}.new").write_bytes(data)
            (sd / f".{name}.new").replace(sd / name)
        _install_current(sd, format(leaf.serial_number, "x"), sp_key, leaf_pem, chain_pem)
        if publish_error is not None:
            raise PublishError(f"certificate {leaf.serial_number:x} was issued and stored in {sd}, but not published: {publish_error}")
        return CertificateStatus(
            key_path=cfg.state_dir / "sp.key", cert_path=cfg.state_dir / "sp.pem", chain_path=cfg.state_dir / "sp-chain.pem",
            x5u=x5u, serial=leaf.serial_number, not_after=leaf.not_valid_after_utc, renewed=True,
        )
    finally:
        if own:
            await session.close()


def _install_current(sd: Path, serial_hex: str, key: ec.EllipticCurvePrivateKey, cert_pem: bytes, chain_pem: bytes) -> Path:
    """Write ``archive/<serial>/{key,cert,chain}.pem`` and point ``current`` at it with one
    symlink rename, so ``current/key.pem`` and ``current/chain.pem`` always belong together."""
    target = sd / "archive" / serial_hex
    target.mkdir(parents=True, exist_ok=True)
    write_private_key(target / "key.pem", key, public=False)
    for name, data in (("cert.pem", cert_pem), ("chain.pem", chain_pem)):
        (target / f".{name}.new").write_bytes(data)
        (target / f".{name}.new").replace(target / name)
    tmp = sd / f".{CURRENT}.new"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(Path("archive") / serial_hex, target_is_directory=True)
    tmp.replace(sd / CURRENT)
    return sd / CURRENT


def save_settings(state_dir: Path, settings: Mapping[str, Any]) -> None:
    """Keep the non-secret options of a managed certificate in ``state_dir/acme.json`` (0600)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / SETTINGS
    write_secret(path, orjson.dumps(dict(settings), option=orjson.OPT_INDENT_2))  # 0600 from creation, replaced atomically


def load_settings(state_dir: Path) -> dict[str, Any] | None:
    """The options saved by :func:`save_settings`, or None when ``state_dir`` is not managed."""
    try:
        out = orjson.loads((state_dir / SETTINGS).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return out if isinstance(out, dict) else None


def managed_state_dirs(paths: list[Path]) -> list[Path]:
    """Each of ``paths`` that is a managed state directory (has ``acme.json`` or ``cert.json``),
    or, for a directory that is not, its immediate subdirectories that are."""
    out: list[Path] = []
    for p in paths:
        if (p / SETTINGS).exists() or (p / "cert.json").exists():
            out.append(p)
        elif p.is_dir():
            out.extend(sorted(c for c in p.iterdir() if c.is_dir() and ((c / SETTINGS).exists() or (c / "cert.json").exists())))
    return out


def run_deploy_hook(command: str, status: "CertificateStatus", state_dir: Path, *, timeout: float = 300.0) -> None:
    """Run ``command`` through the shell after an issuance or renewal, as certbot's
    ``--deploy-hook`` does, with ``STIRSHAKEN_CERT``, ``STIRSHAKEN_KEY``, ``STIRSHAKEN_CHAIN`` (the
    stable ``current/`` paths), ``STIRSHAKEN_X5U``, ``STIRSHAKEN_SERIAL`` and
    ``STIRSHAKEN_STATE_DIR`` in its environment.  Raises :class:`DeployHookError` when it exits
    non-zero or runs longer than ``timeout`` seconds."""
    import os
    import subprocess

    state_dir = state_dir.absolute()  # the hook may change directory (certbot hands absolute paths too)
    cur = state_dir / CURRENT
    env = {
        **os.environ,
        "STIRSHAKEN_CERT": str(cur / "cert.pem"), "STIRSHAKEN_KEY": str(cur / "key.pem"), "STIRSHAKEN_CHAIN": str(cur / "chain.pem"),
        "STIRSHAKEN_X5U": status.x5u or "", "STIRSHAKEN_SERIAL": format(status.serial, "x"), "STIRSHAKEN_STATE_DIR": str(state_dir),
    }
    try:
        res = subprocess.run(command, shell=True, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeployHookError(f"deploy hook {command!r} ran longer than {timeout:.0f} s") from None
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [""]
        raise DeployHookError(f"deploy hook {command!r} exited with status {res.returncode}: {short_text(tail[0])}")


async def ensure_certificate(
    cfg: AcmeConfig, *, renew_before_days: float = 30, force: bool = False, session: aiohttp.ClientSession | None = None
) -> CertificateStatus:
    """Return the SP certificate in ``cfg.state_dir``, obtaining a new one when there is none, when
    it expires within ``renew_before_days`` (AC-05) or when ``force`` is set.

    This is the entry point for ``stirshaken serve`` to keep its signing certificate current:
    ``status.key_path`` and ``status.x5u`` are what the signer needs; ``status.renewed`` says
    whether they changed.
    """
    cur = None if force else current_certificate(cfg.state_dir)
    if cur is not None:
        left = cur.not_after - dt.datetime.now(dt.timezone.utc)
        if left > dt.timedelta(days=renew_before_days):
            return cur
        log.info("certificate %x expires in %s: renewing", cur.serial, left)
    return await obtain_certificate(cfg, session=session)


async def renew_forever(
    cfg: AcmeConfig,
    *,
    renew_before_days: float = 30,
    check_interval: float = 3600,
    on_renewed: Callable[[CertificateStatus], Awaitable[None] | None] | None = None,
) -> None:
    """Check every ``check_interval`` seconds and renew when due; calls ``on_renewed`` after a renewal.

    Failures are logged and retried at the next check (run it as a background task and cancel it).
    """
    while True:
        try:
            status = await ensure_certificate(cfg, renew_before_days=renew_before_days)
            if status.renewed and on_renewed is not None:
                result = on_renewed(status)
                if asyncio.iscoroutine(result):
                    await result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("certificate renewal failed: %s", exc)
        await asyncio.sleep(check_interval)

__all__ = [
    "CURRENT",
    "FLOW_TIMEOUT",
    "SETTINGS",
    "AcmeConfig",
    "CertificateStatus",
    "DeployHookError",
    "PublishError",
    "current_certificate",
    "ensure_certificate",
    "load_settings",
    "managed_state_dirs",
    "obtain_certificate",
    "renew_forever",
    "run_deploy_hook",
    "save_settings",
]
