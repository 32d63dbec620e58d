"""Configuration of ``stirshaken serve`` (a TOML file read with :mod:`tomllib`).

Every option is documented in ``docs/configuration.md``.  :func:`load_config` validates the whole
file before anything listens: unknown keys, wrong types, unparsable addresses, missing or
unreadable key / trust-anchor files all raise :class:`ConfigError` with a one-line message naming
the option (``[signing.tenant.2].key: cannot read private key ...``).  The command turns it into
``error: ...`` on stderr and exit status 2.

Relative paths are resolved against the directory of the configuration file.

Multi-tenant signing follows FCC 24-120 (Eighth Report and Order, 47 CFR §64.6301 as amended):
a provider that signs on behalf of several obligated providers signs each call with *that*
provider's own certificate and applies *that* provider's attestation decision, hence one
``[[signing.tenant]]`` table (key, x5u, numbers, customers) per obligated provider.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core.errors import StirShakenError
from stirshaken.core.keys import load_private_key

__all__ = [
    "AcmeSettings",
    "Address",
    "Config",
    "ConfigError",
    "CustomerConfig",
    "ServerConfig",
    "SigningConfig",
    "TenantConfig",
    "VerificationConfig",
    "load_config",
    "parse_address",
]

_TN_PREFIX = re.compile(r"[0-9#*]{1,15}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_URI = re.compile(r"https?://[^\s<>\"\\;,]+", re.IGNORECASE)
_STIR_CODES = (403, 428, 436, 437, 438)


class ConfigError(ValueError):
    """A configuration problem, described in one line that names the offending option."""


@dataclass(frozen=True)
class Address:
    """A listening address ``host:port`` (IPv6 as ``[::1]:5060``)."""

    host: str
    port: int

    @property
    def family(self) -> int:
        import socket

        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(value: Any, where: str) -> Address:
    """Parse ``host:port`` where host is an IPv4/IPv6 literal or ``localhost``."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected \"host:port\", got {value!r}")
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", value.strip())
    if m is None:
        raise ConfigError(f"{where}: {value!r} is not \"host:port\" (IPv6 as \"[::1]:5060\")")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{where}: {host!r} is not an IP address (use a literal such as 127.0.0.1 or ::1)") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{where}: port {port} is out of range")
    return Address(host, port)


# --- sections -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: listening addresses, processes, logging, SIP transaction cache."""

    http: Address | None = None
    sip_signing: Address | None = None
    sip_verification: Address | None = None
    workers: int = 1
    http_engine: str = "fast"
    log_level: str = "INFO"
    log_format: str = "json"
    access_log: bool = False
    max_body: int = 65536
    shutdown_timeout: float = 5.0
    sip_transaction_ttl: float = 32.0
    sip_transaction_cache: int = 65536
    sip_max_message: int = 65536
    sip_udp_buffer: int = 4194304
    metrics_dir: str = ""
    inspect: bool = False  # the web inspector at /inspect on the http listener (stirshaken.serve.inspect)


@dataclass(frozen=True)
class CustomerConfig:
    """A customer of a tenant: who it is (source addresses / a header value) and its numbers."""

    name: str
    sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    tns: tuple[str, ...] = ()

    def matches_source(self, ip: str | None) -> bool:
        if not self.sources:
            return False
        if ip is None:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.sources)

    def owns(self, tn: str) -> bool:
        return any(tn.startswith(p) for p in self.tns)


@dataclass(frozen=True)
class AcmeSettings:
    """``[signing.acme]`` / ``[signing.tenant.acme]``: obtain and renew the signer's certificate
    through the STI-PA and the STI-CA's ACME server (ATIS-1000080 §6.3.5, RFC 9448)."""

    where: str  # "[signing.acme]" or "[signing.tenant.2.acme]", for messages
    directory_url: str
    pa_url: str
    ocn: str
    username: str
    password: str = field(repr=False)
    state_dir: str
    ca_bundle: str = ""
    cr_url: str = ""
    cr_token: str = field(default="", repr=False)
    renew_before_days: float = 30.0
    check_interval: float = 3600.0
    identifier_encoding: str = "base64url"
    days: int = 0

    def acme_config(self) -> Any:
        """The :class:`stirshaken.acme.AcmeConfig` for :func:`stirshaken.acme.ensure_certificate`."""
        from stirshaken.pki.acme_client import AcmeConfig

        return AcmeConfig(
            directory_url=self.directory_url, pa_url=self.pa_url, ocn=self.ocn, username=self.username,
            password=self.password, state_dir=Path(self.state_dir), ca_bundle=self.ca_bundle or None,
            cr_url=self.cr_url or None, cr_token=self.cr_token or None, identifier_encoding=self.identifier_encoding,
            days=self.days or None,
        )


@dataclass(frozen=True)
class TenantConfig:
    """One signing identity: an obligated provider's key, x5u, numbers and customers.

    With ``acme`` set, ``key``/``key_path``/``x5u`` are empty in the loaded configuration and are
    filled from the ACME state directory when the service starts (:func:`stirshaken.signing.load_signers`).
    """

    name: str
    key: ec.EllipticCurvePrivateKey | None = field(repr=False)
    key_path: str
    x5u: str
    spc: str | None = None
    tns: tuple[str, ...] = ()
    customers: tuple[CustomerConfig, ...] = ()
    default_attest: str = "C"
    acme: AcmeSettings | None = None


@dataclass(frozen=True)
class SigningConfig:
    """``[signing]``: the default signer, per-tenant signers and the attestation policy."""

    default: TenantConfig | None = None
    tenants: tuple[TenantConfig, ...] = ()
    attest_header: str = "X-Attest"
    tenant_header: str = "X-Tenant"
    customer_header: str = ""
    origid_header: str = "X-Origid"
    use_pai: bool = True
    max_iat_skew: int = 60
    country_code: str | None = None
    national_length: int | None = None
    deterministic: bool = False

    @property
    def enabled(self) -> bool:
        return self.default is not None or bool(self.tenants)

    @property
    def signers(self) -> tuple[TenantConfig, ...]:
        """The default signer (if any) followed by the tenants."""
        return ((self.default,) if self.default is not None else ()) + self.tenants

    @property
    def acme(self) -> tuple[AcmeSettings, ...]:
        """The ACME settings of every signer that has them."""
        return tuple(t.acme for t in self.signers if t.acme is not None)


@dataclass(frozen=True)
class VerificationConfig:
    """``[verification]``: options handed to :class:`stirshaken.vs.VerifierConfig` plus SIP policy."""

    trust_anchors: tuple[str, ...] = ()
    crls: tuple[str, ...] = ()
    ca_list: str = ""
    max_age: int = 60
    future_skew: int = 10
    require_date: bool = False
    allow_http_x5u: bool = False
    allow_private_x5u: bool = False
    x5u_ca_bundle: str = ""
    redis: str = ""
    replay_detection: bool = False
    check_authority: bool = False
    authority_blocks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    reason_protocol: str = "STIR"
    reject_on_failure: bool = False
    reject_codes: tuple[int, ...] = ()
    require_identity: bool = False
    use_pai: bool = True
    verstat_in_from: bool = True
    x5u_timeout: float = 3.0

    @property
    def enabled(self) -> bool:
        return bool(self.trust_anchors)

    def rejects(self, code: int | None) -> bool:
        """Whether a failure with SIP ``code`` is answered with that code instead of a 302."""
        if code is None:
            return False
        return self.reject_on_failure or code in self.reject_codes


@dataclass(frozen=True)
class Config:
    """The whole file."""

    server: ServerConfig
    signing: SigningConfig
    verification: VerificationConfig
    path: str = ""


# --- validation helpers -----------------------------------------------------------------------


class _Section:
    """Typed access to one TOML table that remembers which keys were read."""

    def __init__(self, data: Any, where: str, allowed: set[str]):
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a table")
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ConfigError(f"{where}: unknown option {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
        self.data = data
        self.where = where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}"

    def get(self, key: str, typ: type | tuple[type, ...], default: Any) -> Any:
        if key not in self.data:
            return default
        v = self.data[key]
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            return float(v)
        if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
            tname = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
            raise ConfigError(f"{self._name(key)}: expected {tname}, got {v!r}")
        return v

    def int_range(self, key: str, default: int, lo: int, hi: int) -> int:
        v = self.get(key, int, default)
        if not lo <= v <= hi:
            raise ConfigError(f"{self._name(key)}: {v} is not between {lo} and {hi}")
        return v

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        v = self.get(key, str, default)
        if v not in choices:
            raise ConfigError(f"{self._name(key)}: {v!r} is not one of {', '.join(choices)}")
        return v

    def str_list(self, key: str) -> tuple[str, ...]:
        v = self.get(key, (list, str), [])
        if isinstance(v, str):
            v = [v] if v else []
        if not all(isinstance(x, str) for x in v):
            raise ConfigError(f"{self._name(key)}: expected a list of strings")
        return tuple(v)

    def header_name(self, key: str, default: str) -> str:
        v = self.get(key, str, default)
        if v and _HEADER_NAME.fullmatch(v) is None:
            raise ConfigError(f"{self._name(key)}: {v!r} is not a valid header name")
        return v


def _resolve(base: Path, value: str) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else base / p


def _tn_prefixes(sec: _Section, key: str) -> tuple[str, ...]:
    out = []
    for v in sec.str_list(key):
        t = v.strip().lstrip("+").replace("-", "").replace(" ", "")
        if t.endswith("*") and len(t) > 1 and _TN_PREFIX.fullmatch(t[:-1]):
            t = t[:-1]  # "1215*" is a prefix written with a wildcard
        if _TN_PREFIX.fullmatch(t) is None:
            raise ConfigError(f"{sec._name(key)}: {v!r} is not a telephone number or prefix")
        out.append(t)
    return tuple(out)


def _load_key(base: Path, sec: _Section, key: str) -> tuple[ec.EllipticCurvePrivateKey, str]:
    value = sec.get(key, str, "")
    if not value:
        raise ConfigError(f"{sec._name(key)}: a private key file is required")
    path = _resolve(base, value)
    if not path.is_file():
        raise ConfigError(f"{sec._name(key)}: key file {str(path)!r} does not exist")
    try:
        return load_private_key(path), str(path)
    except StirShakenError as exc:
        raise ConfigError(f"{sec._name(key)}: {exc.description}") from None


def _x5u(sec: _Section) -> str:
    v = sec.get("x5u", str, "")
    if not v:
        raise ConfigError(f"{sec._name('x5u')}: the certificate URL (x5u) is required")
    if _URI.fullmatch(v) is None:
        raise ConfigError(f"{sec._name('x5u')}: {v!r} is not an http(s) URL")
    return v


def _customers(base: Path, data: Any, where: str) -> tuple[CustomerConfig, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ConfigError(f"{where}: expected an array of tables ([[...customer]])")
    out = []
    for i, item in enumerate(data, 1):
        sec = _Section(item, f"{where}.{i}", {"name", "sources", "tns"})
        name = sec.get("name", str, f"customer-{i}")
        nets = []
        for s in sec.str_list("sources"):
            try:
                nets.append(ipaddress.ip_network(s, strict=False))
            except ValueError:
                raise ConfigError(f"{sec._name('sources')}: {s!r} is not an IP address or network") from None
        out.append(CustomerConfig(name=name, sources=tuple(nets), tns=_tn_prefixes(sec, "tns")))
    return tuple(out)


_TENANT_KEYS = {"name", "spc", "ocn", "key", "x5u", "tns", "customer", "default_attest", "acme"}

_ACME_KEYS = {
    "directory_url", "pa_url", "ocn", "username", "password", "password_file", "password_env", "state_dir", "ca_bundle",
    "cr_url", "cr_token", "cr_token_file", "cr_token_env", "renew_before_days", "check_interval", "identifier_encoding", "days",
}


def _url(sec: _Section, key: str, *, required: bool) -> str:
    v = sec.get(key, str, "")
    if not v:
        if required:
            raise ConfigError(f"{sec._name(key)}: an http(s) URL is required")
        return ""
    if _URI.fullmatch(v) is None:
        raise ConfigError(f"{sec._name(key)}: {v!r} is not an http(s) URL")
    return v


def _secret(base: Path, sec: _Section, key: str, *, required: bool) -> str:
    """A secret given inline (``key``), in a file (``key_file``) or in an environment variable (``key_env``)."""
    given = [k for k in (key, f"{key}_file", f"{key}_env") if sec.data.get(k)]
    if len(given) > 1:
        raise ConfigError(f"{sec._name(given[1])}: give only one of {key}, {key}_file, {key}_env")
    if not given:
        if required:
            raise ConfigError(f"{sec._name(key)}: required (or {key}_file / {key}_env)")
        return ""
    k = given[0]
    v = sec.get(k, str, "")
    if k == key:
        return v
    if k.endswith("_env"):
        value = os.environ.get(v, "")
        if not value:
            raise ConfigError(f"{sec._name(k)}: environment variable {v!r} is not set")
        return value
    path = _resolve(base, v)
    try:
        value = path.read_text().strip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{sec._name(k)}: cannot read {str(path)!r}: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"{sec._name(k)}: {str(path)!r} is empty")
    return value


def _acme(base: Path, data: Any, where: str, ocn: str | None) -> AcmeSettings:
    sec = _Section(data, where, _ACME_KEYS)
    code = sec.get("ocn", str, "") or ocn or ""
    if not code:
        raise ConfigError(f"{sec._name('ocn')}: the SPC/OCN to obtain a certificate for is required (here or as the signer's spc/ocn)")
    if re.fullmatch(r"[0-9A-Z]{1,16}", code) is None:
        raise ConfigError(f"{sec._name('ocn')}: {code!r} is not an SPC/OCN (1-16 digits or upper-case letters)")
    user = sec.get("username", str, "")
    if not user:
        raise ConfigError(f"{sec._name('username')}: the STI-PA user name is required")
    state = sec.get("state_dir", str, "")
    if not state:
        raise ConfigError(f"{sec._name('state_dir')}: a directory for the ACME account, key and certificate is required")
    bundle = sec.get("ca_bundle", str, "")
    if bundle:
        bundle = _paths(base, _Section({"ca_bundle": bundle}, where, {"ca_bundle"}), "ca_bundle", urls=False)[0]
    renew = float(sec.get("renew_before_days", float, 30.0))
    if not 0 < renew <= 3650:
        raise ConfigError(f"{sec._name('renew_before_days')}: {renew} is not between 0 and 3650")
    interval = float(sec.get("check_interval", float, 3600.0))
    if not 0.5 <= interval <= 30 * 86400:
        raise ConfigError(f"{sec._name('check_interval')}: {interval} is not between 0.5 and 2592000 seconds")
    return AcmeSettings(
        where=where,
        directory_url=_url(sec, "directory_url", required=True),
        pa_url=_url(sec, "pa_url", required=True),
        ocn=code,
        username=user,
        password=_secret(base, sec, "password", required=True),
        state_dir=str(_resolve(base, state)),
        ca_bundle=bundle,
        cr_url=_url(sec, "cr_url", required=False),
        cr_token=_secret(base, sec, "cr_token", required=False),
        renew_before_days=renew,
        check_interval=interval,
        identifier_encoding=sec.choice("identifier_encoding", "base64url", ("base64url", "base64")),
        days=sec.int_range("days", 0, 0, 3650),
    )


def _tenant(base: Path, sec: _Section, name: str, acme_where: str) -> TenantConfig:
    spc = sec.get("spc", str, "") or sec.get("ocn", str, "") or None
    acme = None
    if "acme" in sec.data:
        acme = _acme(base, sec.data["acme"], acme_where, spc)
        for k in ("key", "x5u"):
            if k in sec.data:
                raise ConfigError(f"{sec._name(k)}: not allowed with {acme_where} (the key and x5u come from ACME)")
        key, key_path, x5u = None, "", ""
    else:
        key, key_path = _load_key(base, sec, "key")
        x5u = _x5u(sec)
    return TenantConfig(
        name=sec.get("name", str, name) or name,
        key=key,
        key_path=key_path,
        x5u=x5u,
        spc=spc,
        tns=_tn_prefixes(sec, "tns"),
        customers=_customers(base, sec.data.get("customer"), sec._name("customer")),
        default_attest=sec.choice("default_attest", "C", ("A", "B", "C")),
        acme=acme,
    )


def _server(data: Any) -> ServerConfig:
    sec = _Section(data, "[server]", {f.name for f in ServerConfig.__dataclass_fields__.values()})
    addrs = {}
    for k in ("http", "sip_signing", "sip_verification"):
        v = sec.get(k, str, "")
        addrs[k] = parse_address(v, sec._name(k)) if v else None
    if not any(addrs.values()):
        raise ConfigError("[server]: nothing to serve: set http, sip_signing and/or sip_verification")
    used = [a for a in addrs.values() if a is not None]
    for i, a in enumerate(used):
        for b in used[i + 1:]:
            if a == b and a.port != 0:
                raise ConfigError(f"[server]: address {a} is used twice")
    workers = sec.int_range("workers", 1, 1, 256)
    if workers > 1 and any(a.port == 0 for a in used):
        raise ConfigError("[server].workers: port 0 (ephemeral) needs workers = 1")
    return ServerConfig(
        workers=workers,
        http_engine=sec.choice("http_engine", "fast", ("fast", "aiohttp")),
        log_level=sec.choice("log_level", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
        log_format=sec.choice("log_format", "json", ("json", "text")),
        access_log=sec.get("access_log", bool, False),
        max_body=sec.int_range("max_body", 65536, 256, 16 * 1024 * 1024),
        shutdown_timeout=float(sec.get("shutdown_timeout", float, 5.0)),
        sip_transaction_ttl=float(sec.get("sip_transaction_ttl", float, 32.0)),
        sip_transaction_cache=sec.int_range("sip_transaction_cache", 65536, 16, 10_000_000),
        sip_max_message=sec.int_range("sip_max_message", 65536, 1024, 1024 * 1024),
        sip_udp_buffer=sec.int_range("sip_udp_buffer", 4194304, 0, 1 << 30),
        metrics_dir=sec.get("metrics_dir", str, ""),
        inspect=sec.get("inspect", bool, False),
        **addrs,
    )


_SIGNING_KEYS = {
    "key", "x5u", "spc", "ocn", "tns", "customer", "default_attest", "tenant", "attest_header", "tenant_header",
    "customer_header", "origid_header", "use_pai", "max_iat_skew", "country_code", "national_length", "deterministic", "acme",
}


def _signing(base: Path, data: Any) -> SigningConfig:
    sec = _Section(data if data is not None else {}, "[signing]", _SIGNING_KEYS)
    default = None
    if "key" in sec.data or "x5u" in sec.data or "acme" in sec.data:
        default = _tenant(base, sec, "default", "[signing.acme]")
    tenants = []
    raw = sec.data.get("tenant", [])
    if not isinstance(raw, list):
        raise ConfigError("[signing.tenant]: expected an array of tables ([[signing.tenant]])")
    names = set()
    for i, item in enumerate(raw, 1):
        tsec = _Section(item, f"[signing.tenant.{i}]", _TENANT_KEYS)
        if not tsec.get("name", str, ""):
            raise ConfigError(f"[signing.tenant.{i}].name: every tenant needs a name")
        t = _tenant(base, tsec, f"tenant-{i}", f"[signing.tenant.{i}.acme]")
        if t.name in names:
            raise ConfigError(f"[signing.tenant.{i}].name: tenant {t.name!r} defined twice")
        names.add(t.name)
        tenants.append(t)
    dirs: dict[str, str] = {}
    for t in ([default] if default is not None else []) + tenants:
        if t.acme is not None:
            other = dirs.setdefault(t.acme.state_dir, t.acme.where)
            if other != t.acme.where:
                raise ConfigError(f"{t.acme.where}.state_dir: {t.acme.state_dir!r} is already used by {other}")
    cc = sec.get("country_code", str, "") or None
    if cc is not None and not cc.isdigit():
        raise ConfigError(f"[signing].country_code: {cc!r} is not digits")
    nl = sec.get("national_length", int, 0) or None
    return SigningConfig(
        default=default,
        tenants=tuple(tenants),
        attest_header=sec.header_name("attest_header", "X-Attest"),
        tenant_header=sec.header_name("tenant_header", "X-Tenant"),
        customer_header=sec.header_name("customer_header", ""),
        origid_header=sec.header_name("origid_header", "X-Origid"),
        use_pai=sec.get("use_pai", bool, True),
        max_iat_skew=sec.int_range("max_iat_skew", 60, 1, 86400),
        country_code=cc,
        national_length=nl,
        deterministic=sec.get("deterministic", bool, False),
    )


def _paths(base: Path, sec: _Section, key: str, *, urls: bool) -> tuple[str, ...]:
    out = []
    for v in sec.str_list(key):
        if urls and re.match(r"https?://", v, re.IGNORECASE):
            out.append(v)
            continue
        p = _resolve(base, v)
        if not p.exists():
            raise ConfigError(f"{sec._name(key)}: {str(p)!r} does not exist")
        if not os.access(p, os.R_OK):
            raise ConfigError(f"{sec._name(key)}: {str(p)!r} is not readable")
        out.append(str(p))
    return tuple(out)


def _verification(base: Path, data: Any) -> VerificationConfig:
    sec = _Section(data if data is not None else {}, "[verification]",
                   {f.name for f in VerificationConfig.__dataclass_fields__.values()})
    blocks_raw = sec.get("authority_blocks", dict, {})
    blocks: dict[str, tuple[str, ...]] = {}
    for spc, prefixes in blocks_raw.items():
        bsec = _Section({"tns": prefixes}, f"[verification.authority_blocks].{spc}", {"tns"})
        blocks[str(spc)] = _tn_prefixes(bsec, "tns")
    codes = sec.get("reject_codes", list, [])
    for c in codes:
        if c not in _STIR_CODES:
            raise ConfigError(f"[verification].reject_codes: {c!r} is not one of {', '.join(map(str, _STIR_CODES))}")
    bundle = sec.get("x5u_ca_bundle", str, "")
    if bundle:
        bundle = str(_paths(base, _Section({"b": bundle}, "[verification]", {"b"}), "b", urls=False)[0])
    redis = sec.get("redis", str, "")
    if redis and not re.match(r"(rediss?|unix)://", redis):
        raise ConfigError(f"[verification].redis: {redis!r} is not a redis:// URL")
    replay = sec.get("replay_detection", bool, False)
    return VerificationConfig(
        trust_anchors=_paths(base, sec, "trust_anchors", urls=False),
        crls=_paths(base, sec, "crls", urls=True),
        ca_list=sec.get("ca_list", str, ""),
        max_age=sec.int_range("max_age", 60, 1, 86400),
        future_skew=sec.int_range("future_skew", 10, 0, 3600),
        require_date=sec.get("require_date", bool, False),
        allow_http_x5u=sec.get("allow_http_x5u", bool, False),
        allow_private_x5u=sec.get("allow_private_x5u", bool, False),
        x5u_ca_bundle=bundle,
        redis=redis,
        replay_detection=replay,
        check_authority=sec.get("check_authority", bool, False),
        authority_blocks=blocks,
        reason_protocol=sec.choice("reason_protocol", "STIR", ("STIR", "SIP")),
        reject_on_failure=sec.get("reject_on_failure", bool, False),
        reject_codes=tuple(codes),
        require_identity=sec.get("require_identity", bool, False),
        use_pai=sec.get("use_pai", bool, True),
        verstat_in_from=sec.get("verstat_in_from", bool, True),
        x5u_timeout=float(sec.get("x5u_timeout", float, 3.0)),
    )


def parse_config(data: Mapping[str, Any], base: Path, path: str = "") -> Config:
    """Validate an already-parsed TOML document."""
    unknown = sorted(set(data) - {"server", "signing", "verification"})
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}] (known: [server], [signing], [verification])")
    server = _server(data.get("server", {}))
    signing = _signing(base, data.get("signing"))
    verification = _verification(base, data.get("verification"))
    if server.sip_signing is not None and not signing.enabled:
        raise ConfigError("[server].sip_signing is set but [signing] has no key (nor any [[signing.tenant]])")
    if server.sip_verification is not None and not verification.enabled:
        raise ConfigError("[server].sip_verification is set but [verification].trust_anchors is empty")
    return Config(server=server, signing=signing, verification=verification, path=path)


def load_config(path: str | Path) -> Config:
    """Read and validate the configuration file; raises :class:`ConfigError`."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {str(p)!r}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return parse_config(data, p.resolve().parent, str(p))
