"""Configuration of ``stirshaken serve`` (a TOML file read with :mod:`tomllib`).

Every option is documented in ``docs/configuration.md``.  :func:`load_config` validates the whole
file before anything listens: unknown keys, wrong types, unparsable addresses, missing or
unreadable key / trust-anchor files all raise :class:`ConfigError` with a one-line message naming
the option (``[signing.tenant.2].key: cannot read private key ...``).  The command turns it into
``error: ...`` on stderr and exit status 2.

The schema is one pydantic model per table, in the style of :class:`stirshaken.vs.config.VerifierConfig`
(which ``[verification]`` extends): :class:`ServerConfig`, :class:`SigningConfig` (whose own signer
options form the default :class:`TenantConfig`), :class:`TenantConfig` (``[[signing.tenant]]``),
:class:`CustomerConfig` (``[[...customer]]``), :class:`AcmeSettings` (``[...acme]``),
:class:`InventoryConfig` (``[inventory]``), :class:`RecordsConfig` (``[records]``), held by :class:`Config`.  Each is frozen, refuses unknown options and coerces nothing beyond TOML's needs
(an integer is a float, a list a tuple, one string a list of one); each default is written once,
in its model (``deterministic`` is :class:`~stirshaken.core.passport.Signer`'s).  Relative paths
are resolved against the directory of the configuration file, given as the validation context
``{"base": dir}``; without it (a library caller building the models) paths are taken as given.

Multi-tenant signing follows FCC 24-120 (Eighth Report and Order, 47 CFR §64.6301 as amended):
a provider that signs on behalf of several obligated providers signs each call with *that*
provider's own certificate and applies *that* provider's attestation decision, hence one
``[[signing.tenant]]`` table (key, x5u, numbers, customers) per obligated provider.
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import os
import re
import ssl
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Mapping

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, ValidationError, ValidationInfo, model_validator

from stirshaken.core.errors import StirShakenError
from stirshaken.core.keys import load_private_key
from stirshaken.core.passport import Signer
from stirshaken.core.sip.abnf import TOKEN_RE
from stirshaken.core.x5u import check_x5u_url, is_lab_x5u
from stirshaken.serve.limits import ConnectionLimits
from stirshaken.serve.logoutput import PENDING_MAX
from stirshaken.vs.config import OptionError, VerifierConfig, check_files, error_parts, option_name, shown, tn_prefix, usable_file

__all__ = [
    "AcmeSettings",
    "Address",
    "Config",
    "ConfigError",
    "CustomerConfig",
    "InventoryConfig",
    "RecordsConfig",
    "ServerConfig",
    "SigningConfig",
    "TenantConfig",
    "VerificationConfig",
    "check_config",
    "load_config",
    "parse_address",
    "parse_config",
]

_URI = re.compile(r"https?://[^\s<>\"\\;,]+", re.IGNORECASE)
_OCN = re.compile(r"[0-9A-Z]{1,16}")

#: The library's own defaults of :class:`~stirshaken.core.passport.Signer` (``deterministic``):
#: the ``[signing]`` model takes them from there, so they are written once.
_SIGNER = {k: p.default for k, p in inspect.signature(Signer.__init__).parameters.items() if p.default is not p.empty}


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


def _address(value: Any) -> Address:
    """``host:port`` (host an IPv4/IPv6 literal or ``localhost``) as an :class:`Address`; raises
    :class:`ValueError` with the problem."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected \"host:port\", got {shown(value)}")
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", value.strip())
    if m is None:
        raise ValueError(f"{shown(value)} is not \"host:port\" (IPv6 as \"[::1]:5060\")")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{shown(host)} is not an IP address (use a literal such as 127.0.0.1 or ::1)") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return Address(host, port)


def parse_address(value: Any, where: str) -> Address:
    """Parse ``host:port`` where host is an IPv4/IPv6 literal or ``localhost``; raises
    :class:`ConfigError` prefixed with ``where``."""
    try:
        return _address(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


# --- field types ---------------------------------------------------------------------------------
#
# The TOML coercions of the earlier parser, and no more: an integer is a valid float, a list
# (TOML array) a tuple, one string a list of one ("" of none), "" an unset optional string.


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _seq(value: Any) -> Any:
    if isinstance(value, str):
        return (value,) if value else ()
    return _tuple(value)


def _none_if_empty(value: Any) -> Any:
    return None if value == "" else value


def _bound(x: float) -> str:
    """A bound as written in docs/configuration.md: an int whole (``log_buffer``'s 1073741824
    was shown ``1.07374e+09``), a float short."""
    return str(x) if isinstance(x, int) else f"{x:g}"


def _between(lo: float, hi: float, unit: str = "", *, open_low: bool = False) -> AfterValidator:
    """``lo <= value <= hi`` (``lo < value`` with ``open_low``), else ``"{value} is not between lo and hi"``."""

    def check(value: Any) -> Any:
        if not (lo < value if open_low else lo <= value) or value > hi:
            raise ValueError(f"{value} is not between {_bound(lo)} and {_bound(hi)}{unit}")
        return value

    return AfterValidator(check)


def _header_name(value: str) -> str:
    if value and TOKEN_RE.fullmatch(value) is None:  # header-name = token (RFC 3261 §25.1)
        raise ValueError(f"{shown(value)} is not a valid header name")
    return value


def _url(value: str) -> str:
    if value and _URI.fullmatch(value) is None:
        raise ValueError(f"{shown(value)} is not an http(s) URL")
    return value


def _required(message: str) -> AfterValidator:
    def check(value: Any) -> Any:
        if not value:
            raise ValueError(message)
        return value

    return AfterValidator(check)


def _tn_prefixes(value: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(tn_prefix(v) for v in value)  # ValueError: "'12a' is not a telephone number or prefix"


def _networks(value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    items = _seq(value)
    if not isinstance(items, tuple):
        raise ValueError(f"must be a list, got {shown(value)}")
    out = []
    for s in items:
        if isinstance(s, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            out.append(s)
            continue
        if not isinstance(s, str):
            raise ValueError(f"must be a list of strings, got {shown(s)}")
        try:
            out.append(ipaddress.ip_network(s, strict=False))
        except ValueError:
            raise ValueError(f"{shown(s)} is not an IP address or network") from None
    return tuple(out)


def _base(info: ValidationInfo) -> Path | None:
    """The configuration file's directory (validation context ``{"base": dir}``), if any."""
    base = (info.context or {}).get("base") if info.context else None
    return None if base is None else Path(base)


def _resolve(base: Path | None, value: str) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() or base is None else base / p


def _dir(value: str, info: ValidationInfo) -> str:
    """A directory path, resolved against the file's directory (need not exist yet)."""
    return str(_resolve(_base(info), value)) if value and _base(info) is not None else value


def _file(value: str, info: ValidationInfo) -> str:
    """A file that must exist and be readable, resolved against the file's directory."""
    base = _base(info)
    if not value or base is None:
        return value
    p = _resolve(base, value)
    usable_file(p)
    return str(p)


def _optional_address(value: Any) -> Address | None:
    """An :class:`Address`, from ``"host:port"``; ``""`` (or None) is unset."""
    if value is None or isinstance(value, Address):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {shown(value)}")
    return _address(value) if value else None


Addr = Annotated[Address | None, PlainValidator(_optional_address)]
Header = Annotated[str, AfterValidator(_header_name)]
Url = Annotated[str, AfterValidator(_url)]
TnPrefixes = Annotated[tuple[str, ...], BeforeValidator(_seq), AfterValidator(_tn_prefixes)]
Networks = Annotated[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], PlainValidator(_networks)]


def _unknown(model: type[BaseModel], key: str | int) -> OptionError:
    return OptionError((key,), f"unknown option (known: {', '.join(sorted(_toml_keys(model)))})")


class _Model(BaseModel):
    """Immutable, unknown options refused, no coercion beyond the TOML ones above."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    #: fields filled in while loading, never read from the file
    _RUNTIME: ClassVar[frozenset[str]] = frozenset()


# --- sections ------------------------------------------------------------------------------------


class ServerConfig(_Model, ConnectionLimits):
    """``[server]``: listening addresses (``host:port``, :class:`Address`), worker processes,
    logging, REST body limit (bytes), shutdown grace (s) and the SIP transaction cache (RFC 3261
    §17.2.1: ``sip_transaction_ttl`` s = 64·T1), and the connection limits of
    :class:`~stirshaken.serve.limits.ConnectionLimits` (timeouts, per-source cap, per-connection
    buffer; defaults written there).  An address used twice, or port 0 with several workers, is
    refused."""

    http: Addr = None
    sip_signing: Addr = None
    sip_verification: Addr = None
    workers: Annotated[int, _between(1, 256)] = 1
    http_engine: Literal["fast", "aiohttp"] = "fast"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    access_log: bool = False
    #: characters of log lines a worker keeps while its stderr is not read; past them lines are
    #: dropped and counted (:mod:`stirshaken.serve.logoutput`)
    log_buffer: Annotated[int, _between(65536, 1 << 30, " bytes")] = PENDING_MAX
    #: the C allocator's thresholds set for a worker's large buffers (:mod:`stirshaken.serve.allocator`)
    malloc_tuning: bool = True
    max_body: Annotated[int, _between(256, 16 * 1024 * 1024)] = 65536
    shutdown_timeout: Annotated[float, _between(0, 3600, " seconds")] = 5.0
    sip_transaction_ttl: Annotated[float, _between(0.5, 3600, " seconds")] = 32.0
    sip_transaction_cache: Annotated[int, _between(16, 10_000_000)] = 65536
    sip_max_message: Annotated[int, _between(1024, 1024 * 1024)] = 65536
    sip_udp_buffer: Annotated[int, _between(0, 1 << 30)] = 4194304
    metrics_dir: str = ""
    #: the web inspector at ``/inspect`` on the ``http`` listener (needs ``[verification]``;
    #: :mod:`stirshaken.serve.inspect`)
    inspect: bool = False

    @property
    def addresses(self) -> tuple[Address, ...]:
        return tuple(a for a in (self.http, self.sip_signing, self.sip_verification) if a is not None)

    @model_validator(mode="after")
    def _consistent(self) -> ServerConfig:
        used = self.addresses
        for i, a in enumerate(used):
            if a.port != 0 and a in used[i + 1:]:
                raise OptionError((), f"address {a} is used twice")
        if self.workers > 1 and any(a.port == 0 for a in used):
            raise OptionError("workers", "port 0 (ephemeral) needs workers = 1")
        return self


@functools.lru_cache(maxsize=4096)
def _source_address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``ip`` names, or None when it is none; memoised per worker because every SIP
    INVITE asks for its peer's (``ipaddress.ip_address`` is 1.75 µs; with the generator it replaced,
    the customer check went 1.8 -> 0.9 µs of a signing INVITE, issue 12 item 6; an SBC peer is one address)."""
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None


class CustomerConfig(_Model):
    """A customer of a signer (ATIS-1000074 §5.2.3): who it is (``sources``: IP addresses or
    networks; or its ``name`` in the customer header) and its numbers (``tns``: TN prefixes)."""

    name: str
    sources: Networks = ()
    tns: TnPrefixes = ()

    def matches_source(self, ip: str | None) -> bool:
        if not self.sources or ip is None:
            return False
        addr = _source_address(ip)
        if addr is None:
            return False
        for net in self.sources:  # a loop, not any(<generator>): this runs per signed INVITE
            if addr in net:
                return True
        return False

    def owns(self, tn: str) -> bool:
        tns = self.tns
        return tn.startswith(tns) if type(tns) is tuple else any(tn.startswith(p) for p in tns)


def _secret(data: dict[str, Any], key: str, base: Path | None, *, required: bool) -> str:
    """A secret given inline (``key``), in a file (``key_file``, trailing newline ignored) or in an
    environment variable (``key_env``); raises :class:`OptionError` naming the option."""
    given = [k for k in (key, f"{key}_file", f"{key}_env") if data.get(k)]
    if len(given) > 1:
        raise OptionError(given[1], f"give only one of {key}, {key}_file, {key}_env")
    if not given:
        if required:
            raise OptionError(key, f"required (or {key}_file / {key}_env)")
        return ""
    k = given[0]
    v = data[k]
    if not isinstance(v, str):
        raise OptionError(k, f"must be a string, got {shown(v)}")
    if k == key:
        return v
    if k.endswith("_env"):
        value = os.environ.get(v, "")
        if not value:
            raise OptionError(k, f"environment variable {shown(v)} is not set")
        return value
    path = _resolve(base, v)
    try:
        value = path.read_text().strip("\r\n")
    except OSError as exc:
        raise OptionError(k, f"cannot read {shown(str(path))}: {exc.strerror}") from None
    if not value:
        raise OptionError(k, f"{shown(str(path))} is empty")
    return value


class AcmeSettings(_Model):
    """``[signing.acme]`` / ``[signing.tenant.acme]``: obtain and renew the signer's certificate
    through the STI-PA and the STI-CA's ACME server (ATIS-1000080 §6.3.5, RFC 9448).

    ``password`` / ``cr_token`` hold the secrets whichever way they were given (inline, ``*_file``
    or ``*_env``); ``ocn`` defaults to the signer's ``spc``/``ocn``; ``renew_before_days`` (days),
    ``check_interval`` (s); ``days`` 0 leaves the validity to the STI-CA.  ``where`` names the
    table in messages (``"[signing.tenant.2.acme]"``), set while loading."""

    _RUNTIME = frozenset({"where"})

    where: str = ""
    directory_url: Annotated[Url, _required("an http(s) URL is required")] = Field("", validate_default=True)
    pa_url: Annotated[Url, _required("an http(s) URL is required")] = Field("", validate_default=True)
    ocn: str = Field("", validate_default=True)
    username: Annotated[str, _required("the STI-PA user name is required")] = Field("", validate_default=True)
    password: str = Field("", repr=False)
    password_file: str = ""
    password_env: str = ""
    state_dir: Annotated[str, _required("a directory for the ACME account, key and certificate is required"), AfterValidator(_dir)] = Field(
        "", validate_default=True
    )
    ca_bundle: Annotated[str, AfterValidator(_file)] = ""
    cr_url: Url = ""
    cr_token: str = Field("", repr=False)
    cr_token_file: str = ""
    cr_token_env: str = ""
    renew_before_days: Annotated[float, _between(0, 3650, open_low=True)] = 30.0
    check_interval: Annotated[float, _between(0.5, 30 * 86400, " seconds")] = 3600.0
    identifier_encoding: Literal["base64url", "base64"] = "base64url"
    days: Annotated[int, _between(0, 3650)] = 0
    #: RFC 8555 §7.3.4 external account binding, as the STI-CA handed it out (``ca eab-create``)
    eab_kid: str = ""
    eab_hmac_key: str = Field("", repr=False)
    eab_hmac_key_file: str = ""
    eab_hmac_key_env: str = ""

    @model_validator(mode="before")
    @classmethod
    def _secrets(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict):
            base = _base(info)
            data = dict(
                data,
                password=_secret(data, "password", base, required=True),
                cr_token=_secret(data, "cr_token", base, required=False),
                eab_hmac_key=_secret(data, "eab_hmac_key", base, required=False),
            )
        return data

    @model_validator(mode="after")
    def _ocn(self) -> AcmeSettings:
        if not self.ocn:
            raise OptionError("ocn", "the SPC/OCN to obtain a certificate for is required (here or as the signer's spc/ocn)")
        if _OCN.fullmatch(self.ocn) is None:
            raise OptionError("ocn", f"{shown(self.ocn)} is not an SPC/OCN (1-16 digits or upper-case letters)")
        return self

    def acme_config(self) -> Any:
        """The :class:`stirshaken.pki.enrollment.AcmeConfig` for :func:`~stirshaken.pki.enrollment.ensure_certificate`."""
        from stirshaken.pki.enrollment import AcmeConfig

        return AcmeConfig(
            directory_url=self.directory_url, pa_url=self.pa_url, ocn=self.ocn, username=self.username,
            password=self.password, state_dir=Path(self.state_dir), ca_bundle=self.ca_bundle or None,
            cr_url=self.cr_url or None, cr_token=self.cr_token or None, identifier_encoding=self.identifier_encoding,
            days=self.days or None, eab_kid=self.eab_kid or None, eab_hmac_key=self.eab_hmac_key or None,
        )


class TenantConfig(_Model):
    """One signing identity: an obligated provider's key, x5u, numbers and customers (FCC 24-120).

    From the file ``key`` is a path: it is resolved, loaded (PEM P-256, :func:`load_private_key`)
    and kept as the key object, its path as ``key_path``.  ``ocn`` is another name of ``spc``.
    With ``acme`` set, ``key``/``key_path``/``x5u`` are empty in the loaded configuration and are
    filled from the ACME state directory when the service starts (:func:`stirshaken.serve.signing.load_signers`).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _RUNTIME = frozenset({"key_path", "chain"})

    name: Annotated[str, _required("every tenant needs a name")] = Field("", validate_default=True)
    key: ec.EllipticCurvePrivateKey | None = Field(None, repr=False)
    key_path: str = ""
    x5u: Url = ""
    #: the signer's certificate chain file (PEM, leaf first), checked against the key at start,
    #: ``--check`` and SIGHUP (:func:`stirshaken.serve.signing.load_signers`); an ACME signer's is
    #: its ``sp.pem``
    certificate: Annotated[str, AfterValidator(_file)] = ""
    #: the loaded chain (leaf first) of ``certificate``, ACME's ``sp.pem`` or, with
    #: ``verify_x5u``, of the x5u URL; filled by :func:`~stirshaken.serve.signing.load_signers`
    chain: tuple[x509.Certificate, ...] = Field((), repr=False)
    spc: Annotated[str | None, BeforeValidator(_none_if_empty)] = None
    tns: TnPrefixes = ()
    customers: Annotated[tuple[CustomerConfig, ...], BeforeValidator(_tuple)] = Field((), validation_alias="customer")
    default_attest: Literal["A", "B", "C"] = "C"
    acme: AcmeSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_file(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        spc, ocn = data.get("spc"), data.pop("ocn", None)
        if ocn is not None and not isinstance(ocn, str):
            raise OptionError("ocn", f"must be a string, got {shown(ocn)}")
        if not spc and ocn:
            data["spc"] = spc = ocn
        customers = data.get("customer")
        if isinstance(customers, list):  # unnamed customers are customer-1, customer-2, ...
            data["customer"] = [
                dict(c, name=f"customer-{i}") if isinstance(c, dict) and "name" not in c else c for i, c in enumerate(customers, 1)
            ]
        acme = data.get("acme")
        if acme is not None:
            where = acme.get("where") if isinstance(acme, dict) else getattr(acme, "where", "")
            for k in ("key", "x5u", "certificate"):
                if data.get(k):
                    raise OptionError(k, f"not allowed with {where or 'acme'} (the key, certificate and x5u come from ACME)")
            if isinstance(acme, dict) and not acme.get("ocn") and isinstance(spc, str) and spc:
                data["acme"] = dict(acme, ocn=spc)
            return data
        key = data.get("key")
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return data
        if not key:
            raise OptionError("key", "a private key file is required")
        if not isinstance(key, str):
            raise OptionError("key", f"must be a string, got {shown(key)}")
        path = _resolve(_base(info), key)
        try:
            usable_file(path)
        except ValueError as exc:
            raise OptionError("key", f"key file {exc}") from None
        try:
            data["key"] = load_private_key(path)
        except StirShakenError as exc:
            raise OptionError("key", exc.description) from None
        data["key_path"] = str(path)
        return data

    @model_validator(mode="after")
    def _x5u(self) -> TenantConfig:
        if self.acme is None and not self.x5u:
            raise OptionError("x5u", "the certificate URL (x5u) is required")
        return self


#: options of a signer that ``[signing]`` itself takes for its default signer
_SIGNER_KEYS = frozenset({"key", "x5u", "certificate", "spc", "ocn", "tns", "customer", "default_attest", "acme"})


class SigningConfig(_Model):
    """``[signing]``: the default signer (the signer options of the table itself, named
    ``default``), per-tenant signers (``[[signing.tenant]]``, names unique) and the policy shared
    by all: SIP header names (RFC 3261 tokens; ``""`` disables), ``use_pai``, ``max_iat_skew`` (s),
    the RFC 8224 §8.3 dial plan (``country_code`` digits, ``national_length``),
    ``deterministic`` (RFC 6979; its default is :class:`~stirshaken.core.passport.Signer`'s),
    ``div_passport`` (RFC 8946 on retargeted SIP INVITEs), the x5u relaxations
    ``allow_http_x5u`` / ``allow_private_x5u`` (the verifier's names and rule,
    :func:`stirshaken.core.x5u.check_x5u_url`; every signer's x5u is checked against it),
    ``verify_x5u`` (the x5u URL must serve the signer's certificate) and ``expiry_warning_days``."""

    _RUNTIME = frozenset({"default"})

    default: TenantConfig | None = None
    tenants: Annotated[tuple[TenantConfig, ...], BeforeValidator(_tuple)] = Field((), validation_alias="tenant")
    attest_header: Header = "X-Attest"
    tenant_header: Header = "X-Tenant"
    customer_header: Header = ""
    origid_header: Header = "X-Origid"
    use_pai: bool = True
    max_iat_skew: Annotated[int, _between(1, 86400)] = 60
    country_code: Annotated[str | None, BeforeValidator(_none_if_empty)] = None
    national_length: Annotated[int | None, BeforeValidator(lambda v: None if v == 0 else v)] = 10
    deterministic: bool = _SIGNER["deterministic"]
    div_passport: bool = True
    allow_http_x5u: bool = False
    allow_private_x5u: bool = False
    verify_x5u: bool = False
    expiry_warning_days: Annotated[int, _between(0, 3650)] = 14

    @model_validator(mode="before")
    @classmethod
    def _from_file(cls, data: Any, info: ValidationInfo) -> Any:
        """The table as written: signer options of ``[signing]`` become ``default``; every ACME
        table learns its name for messages."""
        if not isinstance(data, dict) or info.context is None or "base" not in info.context:
            return data
        data = dict(data)
        if "default" in data:
            raise _unknown(cls, "default")
        signer = {k: data.pop(k) for k in _SIGNER_KEYS & set(data)}
        if "key" in signer or "x5u" in signer or "acme" in signer:  # else a policy-only [signing]
            data["default"] = _signer_table(signer, (), "[signing.acme]", name="default")
        tenants = data.get("tenant")
        if isinstance(tenants, list):
            data["tenant"] = [
                _signer_table(t, ("tenant", i), f"[signing.tenant.{i + 1}.acme]") if isinstance(t, dict) else t for i, t in enumerate(tenants)
            ]
        return data

    @model_validator(mode="after")
    def _consistent(self) -> SigningConfig:
        if self.country_code is not None and not self.country_code.isdigit():
            raise OptionError("country_code", f"{shown(self.country_code)} is not digits")
        for loc, t in self._located():
            if t.x5u:
                try:  # what this project's verifier refuses is never signed (ATIS-1000074 §5.3.1)
                    check_x5u_url(t.x5u, allow_http=self.allow_http_x5u, allow_private=self.allow_private_x5u, hints=_TOML_X5U_HINTS)
                except StirShakenError as exc:
                    if not is_lab_x5u(t.x5u):  # a loopback x5u is a lab set-up: signed, with a warning at load (serve/signing.py)
                        raise OptionError((*loc, "x5u"), exc.description) from None
        names: set[str] = set()
        for i, t in enumerate(self.tenants):
            if t.name in names:
                raise OptionError(("tenant", i, "name"), f"tenant {shown(t.name)} defined twice")
            names.add(t.name)
        dirs: dict[str, str] = {}
        for loc, t in self._located():
            if t.acme is not None:
                other = dirs.setdefault(t.acme.state_dir, t.acme.where)
                if other != t.acme.where:
                    raise OptionError((*loc, "acme", "state_dir"), f"{shown(t.acme.state_dir)} is already used by {other}")
        return self

    def _located(self) -> list[tuple[tuple[str | int, ...], TenantConfig]]:
        """Every signer with its location for messages (``("default",)``, ``("tenant", i)``)."""
        return ([(("default",), self.default)] if self.default is not None else []) + [(("tenant", i), t) for i, t in enumerate(self.tenants)]

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


#: the [signing] options that lift the x5u rule's relaxable refusals, as a TOML error names them
_TOML_X5U_HINTS = ("allow_http_x5u = true allows it", "allow_private_x5u = true allows it, lab only")


def _signer_table(data: dict[str, Any], loc: tuple[str | int, ...], acme_where: str, **more: Any) -> dict[str, Any]:
    """A signer's table from the file (at ``loc`` below ``[signing]``), with the names only the
    loader sets: written in the file, they are unknown options."""
    for runtime in ("key_path", "chain"):
        if runtime in data:
            raise OptionError((*loc, runtime), _unknown(TenantConfig, runtime).message)
    acme = data.get("acme")
    if isinstance(acme, dict):
        if "where" in acme:
            raise OptionError((*(loc or ("default",)), "acme", "where"), _unknown(AcmeSettings, "where").message)
        data = dict(data, acme=dict(acme, where=acme_where))
    return dict(data, **more)


class InventoryConfig(_Model):
    """``[inventory]``: attestation from a TN inventory and Do-Not-Originate lists held in a
    database (``serve/inventory/store.py``; SQLite file path or SQLAlchemy URL such as
    ``postgresql+psycopg://user@host/db``).  Unset ``database``: no inventory, the
    ``[signing]`` customer tables decide as before.

    * ``unknown_attest``: level for a call from no known customer (ATIS-1000074 §5.2.3 gateway C);
    * ``caller_attest``: what to do with a level the caller states (REST ``attest``, SIP
      ``attest_header``): ``"lower"`` the lower of it and the inventory's, ``"caller"`` take it,
      ``"inventory"`` ignore it;
    * ``dno_signing``: a call from a DNO number is refused (``"refuse"``: SIP 403 with a Reason,
      REST 403 POL4003) or attested C and counted (``"sign-c"``), never A or B;
    * ``dno_verification``: an inbound call with a DNO caller ID is marked (``"mark"``: header,
      metrics, log) or rejected (``"reject"``) with ``dno_reject_code`` (FCC: 603, 607 or 608);
    * ``poll_interval`` (s): how often a worker checks the database version (changes also arrive
      at once by PostgreSQL NOTIFY); ``admin_token_file`` / ``admin_token_env``: the bearer
      token of the admin REST API (``/admin/v1/...``); without one the admin API is off.
    """

    database: str = ""
    unknown_attest: Literal["A", "B", "C"] = "C"
    caller_attest: Literal["lower", "caller", "inventory"] = "lower"
    dno_signing: Literal["refuse", "sign-c"] = "refuse"
    dno_verification: Literal["mark", "reject"] = "mark"
    dno_reject_code: Literal[603, 607, 608] = 603
    poll_interval: Annotated[float, _between(0.05, 60, " seconds")] = 1.0
    admin_token: str = Field("", repr=False)
    admin_token_file: str = ""
    admin_token_env: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_file(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict):
            base = _base(info)
            data = dict(data, admin_token=_secret(data, "admin_token", base, required=False))
            db = data.get("database")
            if isinstance(db, str) and db and "://" not in db and base is not None:
                data["database"] = str(_resolve(base, db))
        return data

    @property
    def enabled(self) -> bool:
        return bool(self.database)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of ``database`` (a bare path is a SQLite file)."""
        return self.database if "://" in self.database else f"sqlite:///{self.database}"


_IN_MEMORY = "an in-memory SQLite database keeps no record (use a file: sqlite:///FILE or a path)"
#: the SQLAlchemy drivers the records writer is written for (the stdlib's sqlite3, psycopg 3)
_RECORD_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+psycopg")


def _records_database(value: str) -> str:
    """``""``, a SQLite file path or a ``sqlite:`` / ``postgresql:`` SQLAlchemy URL (drivers:
    :data:`_RECORD_SCHEMES`); an in-memory SQLite database is refused (no one could read its
    records, and they would be gone at stop)."""
    if value and "://" in value:
        scheme, _, rest = value.partition("://")
        if scheme.lower() not in _RECORD_SCHEMES:
            raise ValueError(f"{scheme!r} is not a supported database (use a SQLite path, sqlite:///FILE or postgresql://...)")
        path, _, query = rest.partition("?")
        if scheme.lower().startswith("sqlite") and (path in ("", "/") or ":memory:" in path or "mode=memory" in query.lower()):
            raise ValueError(_IN_MEMORY)
    elif ":memory:" in value:
        raise ValueError(_IN_MEMORY)
    return value


def _node_name(v: str) -> str:
    """``[records] node``: printable, without spaces, at most 64 characters (a host name fits)."""
    if len(v) > 64 or not v.isprintable() or any(c.isspace() for c in v):
        raise ValueError("must be at most 64 printable characters without spaces (e.g. the host's name)")
    return v


class RecordsConfig(_Model):
    """``[records]``: one record per signing and verification (:mod:`stirshaken.serve.records`).

    * ``log``: write each record to the ``stirshaken.records`` logger (stderr, in the
      ``[server] log_format``), whatever ``log_level`` says;
    * ``database``: also store the records in a database: a SQLite file path or a SQLAlchemy URL
      (``sqlite:///FILE``, ``postgresql://user@host/db``; ``postgresql://`` uses psycopg 3).
      Records reach it through a queue of ``queue_size`` records written by a background thread,
      so a slow or unreachable database never delays a call: what does not fit is dropped and
      counted (``stirshaken_records_dropped_total``), and ``/healthz`` says ``degraded`` while the
      database is down;
    * ``node``: the name each record carries (JSON ``node``, the table's ``node`` column), so that
      the records of several nodes in one database can be told apart; empty: the host's name.
    """

    log: bool = True
    database: Annotated[str, AfterValidator(_records_database)] = ""
    queue_size: Annotated[int, _between(1, 1_000_000)] = 10000
    node: Annotated[str, AfterValidator(_node_name)] = ""

    @model_validator(mode="before")
    @classmethod
    def _from_file(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict):
            base = _base(info)
            db = data.get("database")
            if isinstance(db, str) and db and "://" not in db and ":memory:" not in db and base is not None:
                data = dict(data, database=str(_resolve(base, db)))
        return data

    @property
    def enabled(self) -> bool:
        """Whether any record is written (to the log or to a database)."""
        return self.log or bool(self.database)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of ``database`` (a bare path is a SQLite file; ``postgresql://`` and
        ``postgres://`` name the psycopg 3 driver, the one installed with ``stirshaken[postgres]``)."""
        db = self.database
        if "://" not in db:
            return f"sqlite:///{db}" if db else ""
        scheme, _, rest = db.partition("://")
        if scheme.lower() in ("postgresql", "postgres"):
            return f"postgresql+psycopg://{rest}"
        return db


class VerificationConfig(VerifierConfig):
    """``[verification]``: every option of :class:`stirshaken.vs.verifier.VerifierConfig` (the same
    model, so the same names, types and defaults) plus the SIP answer policy of the verification
    service.  Unknown options are refused."""

    reject_on_failure: bool = False
    reject_codes: Annotated[tuple[Literal[403, 428, 436, 437, 438], ...], BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v)] = ()
    require_identity: bool = False
    use_pai: bool = True
    verstat_in_from: bool = True

    @property
    def enabled(self) -> bool:
        """Whether calls can be verified: trust anchors configured, or a CA list to take them from."""
        return bool(self.trust_anchors) or self.ca_list is not None

    def rejects(self, code: int | None) -> bool:
        """Whether a failure with SIP ``code`` is answered with that code instead of a 302."""
        if code is None:
            return False
        return self.reject_on_failure or code in self.reject_codes

    def verifier_config(self) -> VerifierConfig:
        """The library configuration these options contain (validated already: not checked again)."""
        return VerifierConfig.model_construct(**{k: getattr(self, k) for k in VerifierConfig.model_fields})


class Config(_Model):
    """The whole file: ``[server]``, ``[signing]``, ``[verification]``; ``path`` is the file it was
    read from (set by :func:`load_config`).  Something must be served, and a SIP service needs its
    section (a signer; trust anchors or a CA list)."""

    _RUNTIME = frozenset({"path"})

    server: ServerConfig = Field(default_factory=ServerConfig)
    signing: SigningConfig = Field(default_factory=SigningConfig)
    verification: VerificationConfig = Field(default_factory=VerificationConfig)
    inventory: InventoryConfig = Field(default_factory=InventoryConfig)
    records: RecordsConfig = Field(default_factory=RecordsConfig)
    path: str = ""

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and info.context is not None and "base" in info.context:
            unknown = sorted(set(data) - {"server", "signing", "verification", "inventory", "records"})
            if unknown:
                raise OptionError((), f"unknown section [{option_name('', [unknown[0]])}] (known: [server], [signing], [verification], [inventory], [records])")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        server = self.server
        if not server.addresses:
            raise OptionError(("server",), "nothing to serve: set http, sip_signing and/or sip_verification")
        if server.sip_signing is not None and not self.signing.enabled:
            raise OptionError((), "[server].sip_signing is set but [signing] has no key (nor any [[signing.tenant]])")
        if server.sip_verification is not None and not self.verification.enabled:
            raise OptionError((), "[server].sip_verification is set but [verification].trust_anchors is empty (and no ca_list)")
        return self


# --- one-line errors -------------------------------------------------------------------------------

#: (model, location name) -> (the table's model, whether an array of tables, its name in the file;
#: "" for the default signer, whose options are [signing]'s own)
_TABLES: dict[tuple[type[BaseModel], str], tuple[type[BaseModel], bool, str]] = {
    (Config, "server"): (ServerConfig, False, "server"),
    (Config, "signing"): (SigningConfig, False, "signing"),
    (Config, "verification"): (VerificationConfig, False, "verification"),
    (Config, "inventory"): (InventoryConfig, False, "inventory"),
    (Config, "records"): (RecordsConfig, False, "records"),
    (SigningConfig, "default"): (TenantConfig, False, ""),
    (SigningConfig, "tenant"): (TenantConfig, True, "tenant"),
    (TenantConfig, "customer"): (CustomerConfig, True, "customer"),
    (TenantConfig, "acme"): (AcmeSettings, False, "acme"),
}


def _toml_keys(model: type[BaseModel]) -> set[str]:
    """The option names of a table as written in the file."""
    keys = {f.validation_alias if isinstance(f.validation_alias, str) else name for name, f in model.model_fields.items()} - getattr(model, "_RUNTIME", frozenset())
    if model is TenantConfig:
        keys.add("ocn")
    if model is SigningConfig:
        keys |= _SIGNER_KEYS
    return keys


def _describe(exc: ValidationError) -> str:
    """One line for the first error: ``[table].option: problem`` (tables of arrays numbered from 1:
    ``[signing.tenant.2].key``, ``[signing.tenant.1.acme].ocn``)."""
    err = exc.errors(include_url=False)[0]
    loc, msg = error_parts(err)
    model: type[BaseModel] = Config
    table: list[str] = []
    i = 0
    while i < len(loc) and isinstance(loc[i], str) and (model, loc[i]) in _TABLES:
        sub, array, name = _TABLES[(model, str(loc[i]))]
        if not name and i + 1 == len(loc):  # the default signer's own options are [signing]'s
            break
        if array:
            if i + 1 >= len(loc) or not isinstance(loc[i + 1], int):
                break
            table.append(f"{name}.{int(loc[i + 1]) + 1}")
            i += 2
        else:
            if name:
                table.append(name)
            i += 1
        model = sub
    if err["type"] == "extra_forbidden":
        if model is Config:
            return f"unknown section [{option_name('', [loc[-1]])}] (known: [server], [signing], [verification], [inventory], [records])"
        msg += f" (known: {', '.join(sorted(_toml_keys(model)))})"
    prefix = option_name(f"[{'.'.join(table)}]" if table else "", loc[i:])
    return f"{prefix}: {msg}" if prefix else msg


def parse_config(data: Mapping[str, Any], base: Path, path: str = "") -> Config:
    """Validate an already-parsed TOML document; relative paths are resolved against ``base``.
    Raises :class:`ConfigError` (one line naming the option)."""
    try:
        cfg = Config.model_validate(dict(data), context={"base": base})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    return cfg.model_copy(update={"path": path}) if path else cfg


def check_config(cfg: Config) -> None:
    """Load every file the server would load at start beyond what :func:`load_config` already
    loaded (the signing keys): the verifier's trust anchors, CA-list roots, CRL signers, CRL files
    and x5u CA bundle (with the verifier's own loaders, :func:`stirshaken.vs.config.check_files`)
    and the ACME CA bundles.  Raises :class:`ConfigError` naming the option, so a bad file stops
    ``stirshaken serve`` (and ``--check``) with one line instead of failing in the workers."""
    try:
        check_files(cfg.verification)
    except OptionError as exc:
        raise ConfigError(f"[verification].{exc.option}: {exc.message}") from None
    for acme in cfg.signing.acme:
        if acme.ca_bundle:
            try:
                ssl.create_default_context(cafile=acme.ca_bundle)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(f"{acme.where}.ca_bundle: {acme.ca_bundle}: not a usable CA bundle ({exc.strerror or exc})") from None


def load_config(path: str | Path) -> Config:
    """Read and validate the configuration file; raises :class:`ConfigError`."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {shown(str(p))}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return parse_config(data, p.resolve().parent, str(p))
