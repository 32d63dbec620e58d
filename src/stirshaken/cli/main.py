"""The ``stirshaken`` command line (typer + rich).

Core commands live here: ``keygen``, ``csr``, ``cert root|intermediate|sp``, ``crl``, ``profile``,
``sign``, ``decode``, ``verify``, ``demo``.  Service commands (``serve``, ``testbed``, ``acme``, PKI
servers) are in :mod:`stirshaken.cli.serve`, :mod:`stirshaken.cli.pki` and :mod:`stirshaken.cli.lab`.

Errors are printed as one line (``438 Invalid Identity Header: ...`` for verification, ``error: ...``
otherwise) with a non-zero exit status; no traceback reaches the user.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

import orjson
import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stirshaken.cli import common
from stirshaken.cli import options as opts
from stirshaken.cli.common import fail as _fail

from stirshaken.core import certificates as certs
from stirshaken.core.errors import StirShakenError
from stirshaken.core.identity import parse_identity
from stirshaken.core.keys import generate_private_key, public_key_pem, public_path_for, write_private_key
from stirshaken.core.passport import Signer, check_claims, check_header, parse_jws, problems
from stirshaken.core.tn import TNError, canonicalize_tn, national_number
from stirshaken.core.tnauthlist import TN, SPC, TNAuthList, TNRange

app = typer.Typer(
    name="stirshaken",  # its help: the docstring of _root
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=common.OneLineErrors,
)
cert_app = typer.Typer(help="Issue test-PKI certificates with the ATIS-1000080 profile.\n\n"
                            "Example: stirshaken cert root --key root.key --out root.pem", no_args_is_help=True)
app.add_typer(cert_app, name="cert")

out = Console()


def _print_version(value: bool) -> None:
    if value:
        from stirshaken import __version__

        typer.echo(f"stirshaken {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
) -> None:
    """STIR/SHAKEN: sign and verify calls, run the STI-AS/VS/CA/PA/CR services.

    Every error is one line on stderr (exit status 2: usage or file error; 1: the operation failed).

    Example: stirshaken demo"""


_read = common.read_bytes
_load_key = common.load_key
_load_certs = common.load_certs


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        _fail(f"cannot write {path}: {exc.strerror}", 2)


def _tnauthlist(spc: Optional[str], tns: Optional[List[str]], ranges: Optional[List[str]]) -> TNAuthList:
    """The TNAuthList of ``--spc``/``--tn``/``--range``; a bad value is one line naming its option."""
    entries: list[Any] = []
    option, value = "--spc", spc
    try:
        if spc:
            entries.append(SPC(spc))
        for t in tns or []:
            option, value = "--tn", t
            entries.append(TN(canonicalize_tn(t)))
        for r in ranges or []:
            option, value = "--range", r
            start, sep, count = r.partition("+") if "+" in r else r.partition(":")
            if not sep or not count.strip().isdigit():
                _fail(f"--range {r!r}: give START+COUNT (or START:COUNT), e.g. 12155550000+100", 2)
            entries.append(TNRange(canonicalize_tn(start), int(count)))
        return TNAuthList(tuple(entries))
    except StirShakenError as exc:
        _fail(f"{option} {value!r}: {exc.description}", 2)
    except TNError as exc:  # its message quotes the value
        _fail(f"{option}: {exc}", 2)


# --- keys, CSRs, certificates -----------------------------------------------------------------


def _country(value: str) -> str:
    if len(value) != 2 or not value.isascii() or not value.isalpha():
        raise typer.BadParameter(f"must be a two-letter country code, got {value}")
    return value.upper()


PASSPHRASE = typer.Option(None, "--passphrase", envvar="STIRSHAKEN_KEY_PASSPHRASE",
                          help="Passphrase of the encrypted private key(s) (or env STIRSHAKEN_KEY_PASSPHRASE).")
COUNTRY = typer.Option("US", "--country", callback=_country, help="Country (C) of the subject: a two-letter code.")
ISSUER_CERT = typer.Option(..., "--issuer-cert", help="Certificate of the issuing CA (PEM).")
ISSUER_KEY = typer.Option(..., "--issuer-key", help="Private key of the issuing CA (PEM).")


@app.command()
def keygen(
    out_path: Path = typer.Option(..., "--out", "-o", help="Private key file (PKCS#8 PEM, written 0600)."),
    passphrase: Optional[str] = typer.Option(None, "--passphrase", envvar="STIRSHAKEN_KEY_PASSPHRASE",
                                             help="Encrypt the key with this passphrase (or env STIRSHAKEN_KEY_PASSPHRASE)."),
    pub: Optional[Path] = typer.Option(None, "--pub", help="Public key file (default: beside the key, .pub)."),
) -> None:
    """Generate a P-256 key pair for ES256.

    Example: stirshaken keygen --out sp.key"""
    key = generate_private_key()
    try:
        write_private_key(out_path, key, passphrase, public=False)
    except OSError as exc:
        _fail(f"cannot write the key {out_path}: {exc.strerror}", 2)
    written = pub if pub is not None else public_path_for(out_path)
    _write(written, public_key_pem(key))
    out.print(f"private key: {out_path} (0600)\npublic key:  {written}", highlight=False)


@app.command()
def csr(
    key: Path = typer.Option(..., "--key", help="SP private key (PEM)."),
    spc: Optional[str] = typer.Option(None, "--spc", help="Service Provider Code (OCN)."),
    tn: Optional[List[str]] = typer.Option(None, "--tn", help="A TN entry (repeatable)."),
    tn_range: Optional[List[str]] = typer.Option(None, "--range", help="A TN range START+COUNT (repeatable)."),
    org: str = typer.Option("STI Participant", "--org", help="Organization (O) of the subject."),
    country: str = COUNTRY,
    out_path: Path = typer.Option(..., "--out", "-o", help="Output file (PEM)."),
    passphrase: Optional[str] = PASSPHRASE,
) -> None:
    """Create a CSR carrying the TNAuthList extension (RFC 8226, ATIS-1000080).

    Example: stirshaken csr --key sp.key --spc 1234 --out sp.csr"""
    if not spc and not tn and not tn_range:
        _fail("give --spc, --tn or --range", 2)
    tnal = _tnauthlist(spc, tn, tn_range)
    req = certs.build_csr(_load_key(key, passphrase), tnauthlist=tnal, org=org, country=country)
    _write(out_path, req.public_bytes(serialization.Encoding.PEM))
    out.print(f"CSR for {tnal}: {out_path}", highlight=False)


def _subject_key(path: Path, passphrase: Optional[str]) -> Any:
    """The subject's key of a certificate: a PEM public key, or the public half of a private key."""
    data = _read(path, "key")
    if b"-----BEGIN PUBLIC KEY-----" not in data:
        return _load_key(path, passphrase)
    try:
        return serialization.load_pem_public_key(data)
    except ValueError:
        _fail(f"{path}: not a valid PEM public key", 2)


def _issuer(issuer_cert: Path, issuer_key: Path, passphrase: Optional[str]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = _load_certs(issuer_cert, "issuer certificate")[0]
    key = _load_key(issuer_key, passphrase)
    if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        _fail("the issuer key does not match the issuer certificate", 2)
    return cert, key


@cert_app.command("root")
def cert_root(
    key: Path = typer.Option(..., "--key", help="The root's private key (PEM)."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Output file (PEM)."),
    cn: str = typer.Option("SHAKEN ROOT CA", "--cn", help="Common name (CN) of the subject."),
    org: str = typer.Option("Test STI-CA", "--org", help="Organization (O) of the subject."),
    country: str = COUNTRY,
    days: int = typer.Option(3650, "--days", min=1, max=36500, help="Validity in days."),
    passphrase: Optional[str] = PASSPHRASE,
) -> None:
    """Self-signed STI root certificate.

    Example: stirshaken cert root --key root.key --out root.pem"""
    cert = certs.create_root(_load_key(key, passphrase), cn=cn, org=org, country=country, days=days)
    _write(out_path, certs.pem([cert]))
    out.print(f"root: {out_path}", highlight=False)


@cert_app.command("intermediate")
def cert_intermediate(
    key: Path = typer.Option(..., "--key", help="The intermediate's own private key (PEM)."),
    issuer_cert: Path = ISSUER_CERT,
    issuer_key: Path = ISSUER_KEY,
    out_path: Path = typer.Option(..., "--out", "-o", help="Output file (PEM)."),
    cn: str = typer.Option("SHAKEN Intermediate CA", "--cn", help="Common name (CN) of the subject."),
    org: str = typer.Option("Test STI-CA", "--org", help="Organization (O) of the subject."),
    country: str = COUNTRY,
    days: int = typer.Option(1825, "--days", min=1, max=36500, help="Validity in days."),
    crl_url: Optional[str] = typer.Option(None, "--crl-url", callback=common.url_option, help="CRL distribution point (the STI-PA CRL)."),
    path_length: int = typer.Option(0, "--path-length", min=0, help="0: issues SP certificates; 1: also SP delegate-issuing CAs (RFC 9060)."),
    passphrase: Optional[str] = PASSPHRASE,
) -> None:
    """STI-CA intermediate certificate.

    Example: stirshaken cert intermediate --key ca.key --issuer-cert root.pem --issuer-key root.key --crl-url https://pa.example.net/crl --out ca.pem"""
    icert, ikey = _issuer(issuer_cert, issuer_key, passphrase)
    cert = certs.create_intermediate(_load_key(key, passphrase), icert, ikey, cn=cn, org=org, country=country, days=days, crl_url=crl_url,
                                     path_length=path_length)
    _write(out_path, certs.pem([cert]))
    out.print(f"intermediate: {out_path}", highlight=False)


@cert_app.command("sp")
def cert_sp(
    issuer_cert: Path = ISSUER_CERT,
    issuer_key: Path = ISSUER_KEY,
    out_path: Path = typer.Option(..., "--out", "-o", help="SP certificate; with --chain, followed by the issuer."),
    csr_path: Optional[Path] = typer.Option(None, "--csr", help="CSR (its TNAuthList is used unless --spc/--tn given)."),
    key: Optional[Path] = typer.Option(None, "--key", help="SP private or public key (PEM), instead of --csr."),
    spc: Optional[str] = typer.Option(None, "--spc", help="Service Provider Code (OCN) of the TNAuthList, unless the CSR's is used."),
    tn: Optional[List[str]] = typer.Option(None, "--tn", help="A TN entry of the TNAuthList (repeatable)."),
    tn_range: Optional[List[str]] = typer.Option(None, "--range", help="A TN range START+COUNT of the TNAuthList (repeatable)."),
    org: str = typer.Option("STI Participant", "--org", help="Organization (O) of the subject."),
    country: str = COUNTRY,
    days: int = typer.Option(365, "--days", min=1, max=36500, help="Validity in days."),
    crl_url: Optional[str] = typer.Option(None, "--crl-url", callback=common.url_option, help="CRL distribution point of the certificate (http or https URL)."),
    chain: bool = typer.Option(False, "--chain", help="Append the issuer certificate (x5u chain file)."),
    ca: bool = typer.Option(False, "--ca", help="The SP's delegate-issuing CA certificate (CA:TRUE, pathlen 0; RFC 9060 §4) instead of an end entity."),
    passphrase: Optional[str] = PASSPHRASE,
) -> None:
    """SP (end-entity) certificate with TNAuthList, CN "SHAKEN <SPC>" (ATIS-1000080 §6.4.1).

    The subject's key comes from --csr or --key (one of them).

    Example: stirshaken cert sp --csr sp.csr --issuer-cert ca.pem --issuer-key ca.key --chain --out sp-chain.pem"""
    if csr_path is not None and key is not None:
        _fail("give --csr or --key, not both: the CSR carries the SP's public key", 2)
    if csr_path is None and key is None:
        _fail("give --csr or --key: the SP's CSR or its key", 2)
    icert, ikey = _issuer(issuer_cert, issuer_key, passphrase)
    tnal = _tnauthlist(spc, tn, tn_range) if (spc or tn or tn_range) else None
    subject: Any
    if csr_path is not None:
        try:
            subject = certs.load_csr(_read(csr_path, "CSR"))
        except StirShakenError as exc:
            _fail(f"{csr_path}: {exc.description}", 2)
    else:
        subject = _subject_key(key, passphrase)  # type: ignore[arg-type]
    if tnal is None and csr_path is None:
        _fail("give --spc, --tn or --range (or a CSR carrying TNAuthList)", 2)
    try:
        cert = certs.create_sp_certificate(
            subject, icert, ikey, tnauthlist=tnal, org=org, country=country, days=days, crl_url=crl_url, ca=ca
        )
    except StirShakenError as exc:
        _fail(exc.description, 2)
    except ValueError as exc:
        _fail(str(exc), 2)
    _write(out_path, certs.pem([cert] + ([icert] if chain else [])))
    out.print(f"SP certificate: {out_path}", highlight=False)


@cert_app.command("delegate")
def cert_delegate(
    issuer_cert: Path = typer.Option(..., "--issuer-cert", help="The SP's delegate-issuing CA certificate (cert sp --ca)."),
    issuer_key: Path = ISSUER_KEY,
    key: Path = typer.Option(..., "--key", help="The enterprise's private or public key (P-256)."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Delegate certificate followed by the issuer chain (the x5u file)."),
    tn: Optional[List[str]] = typer.Option(None, "--tn", help="A telephone number the enterprise may sign for (repeatable)."),
    tn_range: Optional[List[str]] = typer.Option(None, "--range", help="START+COUNT or START:COUNT numbers (repeatable)."),
    authority: Optional[List[str]] = typer.Option(None, "--authority", help="A TN block (prefix) of the issuer's SPC: the authority the TNs must lie in (repeatable)."),
    issuer_chain: Optional[Path] = typer.Option(None, "--issuer-chain", help="PEM of the issuer and its intermediates for the output (default: the issuer certificate)."),
    cn: str = typer.Option("SHAKEN Delegate", "--cn", help="Common name (CN) of the subject."),
    org: str = typer.Option("STI Delegate", "--org", help="Organization (O) of the subject."),
    country: str = COUNTRY,
    days: int = typer.Option(90, "--days", min=1, max=36500, help="Validity in days."),
    crl_url: Optional[str] = typer.Option(None, "--crl-url", callback=common.url_option, help="CRL distribution point of the certificate (http or https URL)."),
    passphrase: Optional[str] = PASSPHRASE,
) -> None:
    """Delegate certificate (RFC 9060, ATIS-1000092) for an enterprise.

    TN and range entries only, each inside the issuer's authority (refused otherwise).

    Example: stirshaken cert delegate --issuer-cert sp-ca.pem --issuer-key sp-ca.key --key ent.key --range 12155550000+100 --out ent-chain.pem"""
    if not tn and not tn_range:
        _fail("give --tn and/or --range: the numbers the delegate may sign for", 2)
    icert, ikey = _issuer(issuer_cert, issuer_key, passphrase)
    tnal = _tnauthlist(None, tn, tn_range)
    subject = _subject_key(key, passphrase)
    prefixes = []
    for p in authority or []:
        try:
            prefixes.append(canonicalize_tn(p))
        except TNError as exc:
            _fail(f"--authority {p!r}: {exc}", 2)
    try:
        cert = certs.create_delegate_certificate(subject, icert, ikey, tnal, authority=prefixes, cn=cn, org=org, country=country,
                                                 days=days, crl_url=crl_url)
    except (StirShakenError, ValueError) as exc:
        _fail(getattr(exc, "description", str(exc)), 2)
    tail = _load_certs(issuer_chain) if issuer_chain is not None else [icert]
    _write(out_path, certs.pem([cert, *tail]))
    out.print(f"delegate certificate: {out_path} ({tnal})", highlight=False, soft_wrap=True)


@app.command()
def crl(
    issuer_cert: Path = ISSUER_CERT,
    issuer_key: Path = ISSUER_KEY,
    out_path: Path = typer.Option(..., "--out", "-o", help="Output file (PEM)."),
    revoke: Optional[List[Path]] = typer.Option(None, "--revoke", help="Certificate to list as revoked (repeatable)."),
    days: int = typer.Option(7, "--days", min=1, max=36500, help="nextUpdate in days."),
    passphrase: Optional[str] = PASSPHRASE,
) -> None:
    """Issue a CRL (PEM) listing the given certificates.

    Example: stirshaken crl --issuer-cert ca.pem --issuer-key ca.key --revoke sp-chain.pem --out ca.crl"""
    icert, ikey = _issuer(issuer_cert, issuer_key, passphrase)
    now = certs.utcnow()
    serials = [(_load_certs(p)[0].serial_number, now) for p in revoke or []]
    c = certs.create_crl(icert, ikey, serials, next_update=dt.timedelta(days=days))
    _write(out_path, c.public_bytes(serialization.Encoding.PEM))
    out.print(f"CRL with {len(serials)} revoked: {out_path}", highlight=False)


def _role(value: Optional[str]) -> Optional[str]:
    if value is not None and value not in ("root", "intermediate", "sp"):
        raise typer.BadParameter(f"must be root, intermediate or sp, got {value}")
    return value


@app.command()
def profile(
    cert_path: Path = typer.Argument(..., help="Certificate (PEM or DER; the first of a chain)."),
    role: Optional[str] = typer.Option(None, "--role", callback=_role, help="root, intermediate or sp (default: guessed)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Report every deviation of a certificate from the ATIS-1000080 profile (exit 1 if any).

    Example: stirshaken profile sp-chain.pem --role sp"""
    chain = _load_certs(cert_path)
    found = certs.check_profile(chain[0], role)
    from stirshaken.core.tnauthlist import from_certificate

    try:
        tn = from_certificate(chain[0])
    except StirShakenError:
        tn = None
    tnal_text = str(tn[0]) if tn else ""
    delegate = bool(tn) and tn[0].spc is None  # type: ignore[index]
    if json_out:
        doc = {"subject": chain[0].subject.rfc4514_string(), "deviations": found, "tnauthlist": tnal_text, "delegate": delegate}
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        out.print(chain[0].subject.rfc4514_string(), highlight=False)
        if tnal_text:
            out.print(f"  {'delegate certificate (RFC 9060): ' if delegate else 'TNAuthList: '}{tnal_text}", highlight=False, soft_wrap=True)
        for f in found:
            out.print(f"  - {escape(f)}", highlight=False)
        if not found:
            out.print("  conforms to the ATIS-1000080 profile", highlight=False)
    raise typer.Exit(1 if found else 0)


# --- signing ----------------------------------------------------------------------------------


def _sign_tn(value: str, flag: str, country_code: Optional[str], national_length: Optional[int]) -> str:
    """A TN for ``sign``: canonical (RFC 8224 §8.3), a national number completed with
    ``--country-code``; a national-looking one signed as given is warned about on stderr."""
    try:
        tn = canonicalize_tn(value, country_code=country_code, national_length=national_length)
    except TNError as exc:
        _fail(f"{flag}: {exc}", 2)
        raise
    if country_code is None:
        w = national_number(value, tn, national_length)
        if w is not None:
            opts.warn(f"{flag}: {w}; --country-code completes it")
    return tn


@app.command()
def sign(
    key: Path = typer.Option(..., "--key", help="SP private key (P-256)."),
    x5u: str = typer.Option(..., "--x5u", callback=common.url_option, help="URL of the SP certificate chain (STI-CR): https, port 443 or 8443, a public host."),
    attest: Optional[str] = typer.Option(None, "--attest", help="Attestation A, B or C (SHAKEN; required there, refused with --ppt div)."),
    orig: str = typer.Option(..., "--orig", help="Calling TN."),
    dest: List[str] = typer.Option(..., "--dest", help="Called TN (repeatable); with --ppt div the new target."),
    origid: Optional[str] = typer.Option(None, "--origid", help="Origination id, a UUID (SHAKEN; default: a new UUID)."),
    iat: Optional[int] = typer.Option(None, "--iat", help="Issued-at (default: now)."),
    ppt: str = typer.Option("shaken", "--ppt", help="PASSporT extension: shaken (RFC 8588), div (RFC 8946, a diverted call) or rcd "
                            "(RFC 9795, rich call data, signed beside the call's SHAKEN PASSporT)."),
    div: Optional[str] = typer.Option(None, "--div", help="With --ppt div: the number the call was diverted from (the previous destination)."),
    nam: Optional[str] = typer.Option(None, "--nam", help="With --ppt rcd: the caller's display name (rcd.nam)."),
    jcd: Optional[str] = typer.Option(None, "--jcd", help="With --ppt rcd: a jCard (RFC 7095) inline, as JSON or @FILE (rcd.jcd; its digest "
                                      "is computed, RFC 8785 form)."),
    jcl: Optional[str] = typer.Option(None, "--jcl", help="With --ppt rcd: URL of a jCard (rcd.jcl); needs --jcl-content or --jcl-digest."),
    jcl_content: Optional[Path] = typer.Option(None, "--jcl-content", help="The file served at --jcl, digested for rcdi (nothing is fetched)."),
    jcl_digest: Optional[str] = typer.Option(None, "--jcl-digest", help="The digest of the content at --jcl (sha256-BASE64), instead of --jcl-content."),
    icn: Optional[str] = typer.Option(None, "--icn", help="With --ppt rcd: URL of an icon (rcd.icn); needs --icn-content or --icn-digest."),
    icn_content: Optional[Path] = typer.Option(None, "--icn-content", help="The file served at --icn, digested for rcdi (nothing is fetched)."),
    icn_digest: Optional[str] = typer.Option(None, "--icn-digest", help="The digest of the content at --icn (sha256-BASE64), instead of --icn-content."),
    crn: Optional[str] = typer.Option(None, "--crn", help="With --ppt rcd: the call reason (crn claim)."),
    country_code: Optional[str] = typer.Option(None, "--country-code", help="Country code completing national numbers (as \\[signing].country_code; "
                                               "without it a national number is signed as given, with a warning)."),
    allow_http_x5u: bool = typer.Option(False, "--allow-http-x5u", help="Allow an http x5u (as \\[signing].allow_http_x5u; verifiers refuse it by default)."),
    allow_private_x5u: bool = typer.Option(False, "--allow-private-x5u", help="Allow an x5u on a private/loopback address or another port (lab only; as \\[signing].allow_private_x5u)."),
    passphrase: Optional[str] = PASSPHRASE,
    token_only: bool = typer.Option(False, "--token", help="Print the bare PASSporT, not the Identity header value."),
    deterministic: Optional[bool] = typer.Option(
        None, "--deterministic/--no-deterministic", help="RFC 6979 deterministic ECDSA: the same input gives the same signature "
        "(default: as \\[signing].deterministic, OpenSSL's hedged nonce from key, digest and randomness)."),
) -> None:
    """Sign a call: print the SIP Identity header value (RFC 8224, ATIS-1000074).

    Inputs this project's verifier would refuse are refused with one line (exit 2): an x5u that
    is not https (or private, or on another port) unless allowed, an attestation other than
    A/B/C, an origid that is not a UUID, a number that is not a telephone number.

    A diverted call: stirshaken sign --ppt div --key sp.key --x5u ... --orig 12155551212 --div 12155551213 --dest 12155559999

    Rich call data: stirshaken sign --ppt rcd --key sp.key --x5u ... --orig 12155551212 --dest 12155551213 --nam "Example Bank"
    --icn https://rcd.example.net/logo.png --icn-content logo.png

    Example: stirshaken sign --key sp.key --x5u https://cr.example.net/sp.pem --attest A --orig 12155551212 --dest 12155551213"""
    from stirshaken.core.passport import check_attest, check_origid, div_claims, shaken_claims
    from stirshaken.core.x5u import SIGN_HINTS, check_x5u_url, is_lab_x5u
    from stirshaken.serve.config import SigningConfig

    if ppt not in ("shaken", "div", "rcd"):
        _fail(f"--ppt: {ppt!r} is not shaken, div or rcd", 2)
    rcd_given = [flag for flag, v in (("--nam", nam), ("--jcd", jcd), ("--jcl", jcl), ("--icn", icn), ("--crn", crn),
                                      ("--jcl-content", jcl_content), ("--jcl-digest", jcl_digest),
                                      ("--icn-content", icn_content), ("--icn-digest", icn_digest)) if v is not None]
    if rcd_given and ppt != "rcd":
        _fail(f"{rcd_given[0]}: only with --ppt rcd (rich call data is signed as its own PASSporT, RFC 9795)", 2)
    try:
        check_x5u_url(x5u, allow_http=allow_http_x5u, allow_private=allow_private_x5u, hints=SIGN_HINTS)
    except StirShakenError as exc:
        if not is_lab_x5u(x5u):
            _fail(f"--x5u: {exc.description}", 2)
        opts.warn(f"--x5u: {exc.description}; signed anyway, as a loopback x5u is a lab set-up no other host can fetch")
    if country_code is not None and not country_code.isdigit():
        _fail(f"--country-code: {country_code!r} is not digits", 2)
    national_length = SigningConfig.model_fields["national_length"].default  # the [signing] default, written once
    orig_tn = _sign_tn(orig, "--orig", country_code, national_length)
    dest_tns = [_sign_tn(d, "--dest", country_code, national_length) for d in dest]
    claims: dict[str, Any]
    if ppt == "rcd":
        if div is not None:
            _fail("--div: only with --ppt div", 2)
        for flag, given in (("--attest", attest), ("--origid", origid)):
            if given is not None:
                _fail(f"{flag}: not a claim of an rcd PASSporT (RFC 9795; the call's SHAKEN PASSporT carries it)", 2)
        claims = _rcd_sign_claims(orig_tn, dest_tns, iat, nam=nam, jcd=jcd, jcl=jcl, jcl_content=jcl_content, jcl_digest=jcl_digest,
                                  icn=icn, icn_content=icn_content, icn_digest=icn_digest, crn=crn,
                                  allow_http=allow_http_x5u, allow_private=allow_private_x5u)
    elif ppt == "div":
        for flag, given in (("--attest", attest), ("--origid", origid)):
            if given is not None:
                _fail(f"{flag}: not a claim of a div PASSporT (RFC 8946 §3; only SHAKEN PASSporTs carry it)", 2)
        if div is None:
            _fail("--div is required with --ppt div: the number the call was diverted from", 2)
        div_tn = _sign_tn(div, "--div", country_code, national_length)  # type: ignore[arg-type]
        try:
            claims = div_claims(orig=orig_tn, dest=dest_tns, div=div_tn, iat=iat)
        except StirShakenError as exc:
            _fail(f"--dest: {exc.description}", 2)
    else:
        if div is not None:
            _fail("--div: only with --ppt div", 2)
        if attest is None:
            _fail("--attest is required for a SHAKEN PASSporT (A, B or C)", 2)
        try:
            level = check_attest(attest.strip().upper())  # type: ignore[union-attr]
        except StirShakenError as exc:
            _fail(f"--attest: {exc.description}", 2)
        if origid is not None:
            try:
                check_origid(origid)
            except StirShakenError as exc:
                _fail(f"--origid: {exc.description}", 2)
        claims = shaken_claims(orig=orig_tn, dest=dest_tns, attest=level, iat=iat, origid=origid)
    k = _load_key(key, passphrase)
    try:
        # an option not given keeps the library's default (the one [signing].deterministic takes)
        signer = Signer(k, x5u, ppt=ppt, **({} if deterministic is None else {"deterministic": deterministic}))
    except ValueError as exc:
        _fail(f"--key: {exc}", 2)
    token = signer.sign_claims(claims)
    sys.stdout.write((token if token_only else signer.identity_for_token(token)) + "\n")


def _rcd_sign_claims(orig: str, dest: list[str], iat: int | None, *, nam: str | None, jcd: str | None, jcl: str | None,
                     jcl_content: Path | None, jcl_digest: str | None, icn: str | None, icn_content: Path | None,
                     icn_digest: str | None, crn: str | None, allow_http: bool, allow_private: bool) -> dict[str, Any]:
    """The claims of ``sign --ppt rcd`` (RFC 9795): the URL of ``--jcl``/``--icn`` must pass the
    rule the verifier fetches it under (the x5u rule), and its digest comes from the file the URL
    serves (``--*-content``) or is given (``--*-digest``); nothing is fetched."""
    from stirshaken.core.rcd import integrity, rcd_claims
    from stirshaken.core.x5u import SIGN_HINTS, check_x5u_url

    jcard = None
    if jcd is not None:
        text = _read(Path(jcd[1:]), "--jcd file") if jcd.startswith("@") else jcd.encode()
        try:
            jcard = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            _fail(f"--jcd: not JSON at line {exc.lineno} column {exc.colno} (a jCard array, or @FILE)", 2)
    digests: dict[str, str] = {}
    for name, url, content, digest in (("jcl", jcl, jcl_content, jcl_digest), ("icn", icn, icn_content, icn_digest)):
        if url is None:
            if content is not None or digest is not None:
                _fail(f"--{name}-{'content' if content is not None else 'digest'}: only with --{name}", 2)
            continue
        try:
            check_x5u_url(url, allow_http=allow_http, allow_private=allow_private, what=f"--{name}", hints=SIGN_HINTS)
        except StirShakenError as exc:
            _fail(exc.description, 2)
        if (content is None) == (digest is None):
            _fail(f"--{name} needs exactly one of --{name}-content FILE (the content it serves) or --{name}-digest sha256-BASE64", 2)
        digests[f"/{name}"] = integrity(_read(content, f"--{name}-content file")) if content is not None else digest  # type: ignore[assignment]
    try:
        return rcd_claims(orig=orig, dest=dest, nam=nam, jcd=jcard, jcl=jcl, icn=icn, crn=crn, digests=digests, iat=iat)
    except StirShakenError as exc:
        _fail(f"--ppt rcd: {exc.description}", 2)
        raise


# --- decoding and verification ----------------------------------------------------------------


def _identity_arg(value: str) -> str:
    if value.startswith("@"):
        return _read(Path(value[1:]), "identity file").decode("utf-8", "replace").strip()
    if value == "-":
        return sys.stdin.read().strip()
    return value.strip()


@app.command()
def decode(
    identity: str = typer.Argument(..., help="Identity header value or PASSporT (@FILE to read a file, - for stdin)."),
    at: Optional[float] = typer.Option(None, "--at", help="Judge iat freshness as of this time (epoch seconds; default now)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Show a PASSporT's header and claims and run the checks verify makes without a certificate.

    The checks: Identity header, JOSE header, claims, iat freshness (a bare PASSporT is judged as
    if its x5u were the header's info).  Exit 0: no check failed (warnings may be listed); 1: a
    check failed (the first failure is shown, as verify would answer it); 2: usage error.

    Example: stirshaken decode @identity.txt --json"""
    from stirshaken.core.verification import prepare

    value = _identity_arg(identity)
    result: dict[str, Any] = {"problems": [], "checks": [], "failed": None}
    token = value
    try:
        hdr = parse_identity(value)
        token = hdr.token
        result["params"] = {k: v for k, v in hdr.params}
        result["problems"].extend(hdr.problems)
    except StirShakenError as exc:
        if ";" in value or "info=" in value:
            result["problems"].append(str(exc))
        token = value.split(";", 1)[0].strip()
    try:
        p = parse_jws(token)
    except StirShakenError as exc:
        result["problems"].append(str(exc))
        p = None
    if p is not None:
        result["header"] = dict(p.header)  # a read-only mapping
        result["claims"] = p.claims
        result["signature"] = p.to_json()["signature"]
        for check in (lambda: check_header(p, ppt=None), lambda: check_claims(p)):
            try:
                check()
            except StirShakenError as exc:
                result["problems"].append(str(exc))
        try:
            check_claims(p)
            result["problems"].extend(problems(p))
        except StirShakenError:
            pass
        x5u = p.header.get("x5u")
        if isinstance(x5u, str) and not x5u.lower().startswith("https://"):
            result["problems"].append("'x5u' is not an https URL (ATIS-1000074 §5.3.1: verifiers refuse it)")
        info = result.get("params", {}).get("info")
        if info is not None and p.x5u != info:
            result["problems"].append("436 Bad Identity Info: 'x5u' does not match the 'info' parameter")
    # the checks verify makes before it needs the certificate: the very same code (prepare)
    judged = value if ";" in value else (f"{token};info=<{p.x5u}>" if p is not None and isinstance(p.x5u, str) else value)
    try:
        prep = prepare(judged, orig=None, dest=None, now=at if at is not None else time.time(), expected_ppt=None)
        result["checks"] = [c.to_json() for c in prep.checks]
    except StirShakenError as exc:
        result["failed"] = {"code": exc.sip_code, "reason": exc.reason, "description": exc.description}
        if str(exc) not in result["problems"]:
            result["problems"].append(str(exc))
    result["skipped"] = ["signature and certificate (decode fetches nothing; use verify)",
                         "orig-matches (the request's calling number is not known here)",
                         "dest-matches (the request's called number is not known here)"]
    if json_out:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for part in ("params", "header", "claims"):
            if part in result:
                out.print(f"[bold]{part}[/bold]: " + escape(orjson.dumps(result[part]).decode()), highlight=False, soft_wrap=True)
        if result["problems"]:
            out.print("[bold]problems[/bold]:")
            for pr in result["problems"]:
                out.print(f"  - {escape(pr)}", highlight=False, soft_wrap=True)
        else:
            out.print("[bold]problems[/bold]: none")
        f = result["failed"]
        out.print(f"[bold]verdict[/bold]: {escape(str(f['code']))} {escape(f['reason'])}: {escape(f['description'])}" if f else
                  "[bold]verdict[/bold]: no check failed (signature and certificate not checked)", highlight=False, soft_wrap=True)
    raise typer.Exit(1 if result["failed"] is not None or p is None else 0)


def _print_result(result: Any, json_out: bool, skipped: list[str] | None = None) -> None:
    if json_out:
        doc = result.to_json()
        doc["skipped"] = skipped or []
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")
        return
    if result.ok:
        out.print(f"[green]{result.verstat}[/green] attest={escape(str(result.attest))}", highlight=False)
    else:  # the description may quote the input or name a TOML table ("[verification]"): not markup
        out.print(escape(f"{result.sip_code} {result.reason}: {result.description}"), highlight=False, soft_wrap=True)
        out.print(f"verstat: {result.verstat}", highlight=False)
    for w in result.warnings:  # a trust problem the result relied on (docs/requirements.md VS-10)
        out.print(f"warning: {w}", highlight=False, soft_wrap=True)
    for rcd in result.rich_call_data:  # RFC 9795, docs/requirements.md RC-02: apart from the SHAKEN verdict
        shown = " ".join(f"{k}={orjson.dumps(rcd['rcd'][k]).decode()}" for k in ("nam", "jcl", "icn") if k in rcd["rcd"])
        if "jcd" in rcd["rcd"]:
            shown += " jcd=(jCard)"
        state = "passed" if rcd["ok"] else "failed"
        out.print(escape(f"rcd ({rcd['ppt']} PASSporT) {state}: {shown.strip()}; {rcd['detail']}"), highlight=False, soft_wrap=True)
    for s in skipped or []:
        out.print(f"not checked: {escape(s)}", highlight=False, soft_wrap=True)


@app.command()
@opts.VERIFICATION.into("verification")
def verify(
    identity: str = typer.Argument(..., help="Identity header value (@FILE to read a file, - for stdin); several may be comma-joined."),
    orig: Optional[str] = typer.Option(None, "--orig", help="Calling TN of the request (From / P-Asserted-Identity)."),
    dest: Optional[List[str]] = typer.Option(None, "--dest", help="Called TN of the request (To / Request-URI)."),
    cert: Optional[Path] = typer.Option(None, "--cert", help="Certificate chain file for the x5u; nothing is fetched."),
    verification: dict[str, Any] = opts.GROUP,
    date: Optional[int] = typer.Option(None, "--date", help="Date header of the request as epoch seconds."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Verify a call: exit 0 only when verification passes.

    Otherwise the SIP code and reason are printed (exit 1); usage and file errors exit 2.
    Comparisons that could not be made (no --orig or --dest) are listed as "not checked".

    Example: stirshaken verify @identity.txt --orig 12155551212 --dest 12155551213 --trust-anchor root.pem"""
    from stirshaken.core.identity import split_header_values
    from stirshaken.vs.verifier import CallInfo, Verifier

    value = _identity_arg(identity)
    cfg = opts.verifier_config(**verification, offline=cert is not None)
    try:
        verifier = Verifier(cfg)
    except StirShakenError as exc:
        _fail(exc.description, 2)
    except (OSError, ValueError) as exc:
        _fail(str(exc), 2)
    try:
        if cert is not None:
            # The chain file stands for the x5u of every header: nothing is fetched, and the
            # PASSporT's x5u must still equal the header's info parameter (checked by verify).
            chain = _load_certs(cert, "certificate chain")
            for part in split_header_values(value):
                try:
                    info = parse_identity(part).info
                except StirShakenError:
                    continue
                if info:
                    verifier.add_static_chain(info, chain)
        result = verifier.verify(CallInfo(identities=[value], from_=orig, to=list(dest or []) or None, date=date))
    finally:
        verifier.close()
    skipped = ([] if orig else ["orig-matches: no --orig given (the PASSporT's orig was not compared with the calling number)"]) + (
        [] if dest else ["dest-matches: no --dest given (the PASSporT's dest was not compared with the called number)"])
    _print_result(result, json_out, skipped)
    raise typer.Exit(0 if result.ok else 1)


# --- the embedded demo (README quick start) ---------------------------------------------------


@app.command()
def demo(
    workdir: Path = typer.Option(Path("demo-pki"), "--dir", help="Where the local test PKI is written."),
) -> None:
    """Create a local test PKI, sign a call, verify it and a tampered copy, print the verdicts.

    Example: stirshaken demo --dir /tmp/demo-pki"""
    from stirshaken.core import jose
    from stirshaken.core.b64 import b64url_encode
    from stirshaken.core.verification import verify_offline

    common.directory(workdir, "--dir")
    rk, ik, sk = generate_private_key(), generate_private_key(), generate_private_key()
    root = certs.create_root(rk)
    inter = certs.create_intermediate(ik, root, rk, crl_url="https://sti-pa.example.net/crl")
    sp = certs.create_sp_certificate(sk, inter, ik, spc="1234", crl_url="https://sti-pa.example.net/crl")
    write_private_key(workdir / "sp.key", sk)
    (workdir / "root.pem").write_bytes(certs.pem([root]))
    (workdir / "sp-chain.pem").write_bytes(certs.pem([sp, inter]))
    x5u = "https://cr.example.net/sp-chain.pem"
    signer = Signer(sk, x5u)
    identity_value = signer.identity(orig="12155551212", dest=["12155551213"], attest="A")
    credential = certs.TrustStore([root]).validate([sp, inter])
    now = time.time()
    token = identity_value.split(";", 1)[0]
    h64, _p64, s64 = jose.split_compact(token)
    claims = {**jose.parse_compact(token).payload, "orig": {"tn": "12155550000"}}  # caller ID changed after signing
    tampered = f"{h64}.{b64url_encode(orjson.dumps(claims, option=orjson.OPT_SORT_KEYS))}.{s64};info=<{x5u}>;alg=ES256;ppt=shaken"
    cases = [
        ("signed call", identity_value, "12155551212"),
        ("spoofed caller ID", identity_value, "12155550000"),
        ("tampered token", tampered, "12155550000"),
    ]
    table = Table(title="stirshaken demo (local test PKI in %s)" % workdir)
    table.add_column("call")
    table.add_column("verstat")
    table.add_column("SIP")
    table.add_column("reason")
    for name, value, orig in cases:
        r = verify_offline(value, credential, orig=orig, dest="12155551213", now=now)
        table.add_row(name, r.verstat, str(r.sip_code or 200), r.description or f"attest {r.attest}")
    out.print(f"Identity: {identity_value}", highlight=False, soft_wrap=True)
    Console(width=max(out.width, 120)).print(table)


from stirshaken.cli import analysis as _analysis  # noqa: E402
from stirshaken.cli import inventory as _inventory  # noqa: E402
from stirshaken.cli import lab as _lab  # noqa: E402
from stirshaken.cli import pki as _pki  # noqa: E402
from stirshaken.cli import serve as _serve  # noqa: E402

for _group in (_serve, _pki, _inventory, _lab, _analysis):
    _group.register(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        raise SystemExit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
