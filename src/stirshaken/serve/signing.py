"""Signing policy of the STI-AS: which key signs a call and with which attestation.

* Tenant selection (FCC 24-120, 47 CFR §64.6301): a provider signing for several obligated
  providers signs each call with the certificate of the provider the call belongs to.  The tenant
  is named by a request header (``tenant_header``: tenant name, SPC or OCN) or found by the
  longest matching calling-TN prefix of a ``[[signing.tenant]]``; otherwise the default
  ``[signing]`` key signs.
* Attestation (ATIS-1000074 §5.2.3): ``A`` (full) when the calling number belongs to the
  authenticated customer, ``B`` (partial) when the customer is known but not the number, ``C``
  (gateway) otherwise.  A customer is known from the signalling source address or from a header
  (``customer_header``); a customer table without ``sources`` is one whose traffic only arrives
  through the trusted SBC, so it is always known.  A caller may instead state the level (REST
  ``attest``, mandatory in ATIS-1000082 §8.2.4.3; SIP ``attest_header``).
* With an inventory (``[inventory]``, :class:`~stirshaken.serve.inventory.index.LiveInventory`
  injected by the server process, which alone loads the database), :meth:`SigningService.decide`
  takes the customer and the A/B/C level from it instead, and a calling number on a
  Do-Not-Originate list is never attested A or B: refused (:class:`DnoRefused`) or signed C.
* ``origid`` (RFC 8588 §5) is a new UUID when not given; ``iat`` (RFC 8225 §5.1.1) comes from the
  request or the clock.

Signing itself uses :class:`stirshaken.core.passport.Signer`, which caches the encoded JOSE header.

* Diverted calls (RFC 8946): :meth:`SigningService.sign_div` signs a ``div`` PASSporT with the
  certificate of the tenant the previous destination (``div``) belongs to: RFC 8946 §3 has the
  retargeting entity sign for an identity within the scope of its own credential.
* Inputs are checked as this project's verifier would judge them, with the core's one rule each
  (:func:`~stirshaken.core.passport.check_attest`, :func:`~stirshaken.core.passport.check_origid`,
  :func:`~stirshaken.core.tn.canonicalize_tn`, :func:`~stirshaken.core.x5u.check_x5u_url`), so
  the CLI, REST and SIP refuse the same inputs with the same words.

Key material comes from the configured key files (and ``certificate`` chain files), or, for a
signer with ``[...acme]``, from its ACME state directory (``sp.key``, ``sp.pem``, ``cert.json``,
written by :func:`stirshaken.pki.enrollment.ensure_certificate`).  :func:`load_signers` reads it
and guards it (:func:`~stirshaken.core.certificates.signing_certificate_fault`: the key is the
certificate's, the certificate is valid now and carries TNAuthList), :func:`verify_x5u` checks
that each x5u URL serves that certificate (``verify_x5u = true``), :func:`signers_from_file`
re-reads the signers of the configuration file (SIGHUP); :meth:`SigningService.reload` swaps
them in between two requests.  Any failure is a :class:`KeyMaterialError` of one line naming the
signer, and the signers in use stay.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from stirshaken.serve.config import AcmeSettings, ConfigError, CustomerConfig, InventoryConfig, SigningConfig, TenantConfig
from stirshaken.serve.inventory.index import InventoryDecisions, LiveInventory
from stirshaken.serve.record_fields import Shared
from stirshaken.core.certificates import load_certificates, signing_certificate_fault
from stirshaken.core.errors import StirShakenError
from stirshaken.core.keys import load_private_key
from stirshaken.core.passport import ATTEST_VALUES, Signer, check_attest, check_origid, div_claims
from stirshaken.core.rcd import rcd_claims
from stirshaken.core.tn import TNError, canonicalize_tn, national_number
from stirshaken.core.x5u import SIGN_HINTS, check_x5u_url, is_lab_x5u

__all__ = ["DnoRefused", "KeyMaterialError", "SigningError", "SigningService", "Tenant", "acme_material", "load_signers",
           "prepare_signers", "signers_from_file", "verify_x5u"]

log = logging.getLogger("stirshaken.serve")

#: the attestation levels (RFC 8588 §4), the core's one set
ATTEST = ATTEST_VALUES


class SigningError(ValueError):
    """A request that cannot be signed: ``param`` names the offending input (ATIS SVC4005)."""

    def __init__(self, param: str, value: str, message: str):
        super().__init__(message)
        self.param = param
        self.value = value
        self.message = message


class DnoRefused(SigningError):
    """The calling number is on a Do-Not-Originate list and policy refuses to sign it
    (``[inventory] dno_signing = "refuse"``): SIP 403 with a Reason, REST 403 POL4003."""

    def __init__(self, tn: str):
        super().__init__("orig", tn, f"calling number {tn} is on a Do-Not-Originate list")


class KeyMaterialError(ValueError):
    """A signer's key or certificate state cannot be (re)loaded; the message names the signer."""


def acme_material(acme: AcmeSettings) -> tuple[Any, str, str, int]:
    """``(private key, key path, x5u, serial)`` of the certificate in an ACME state directory.

    Checks that the key belongs to the stored certificate and that ``cert.json`` describes that
    certificate, so a half-written renewal is never used.
    """
    key, key_path, x5u, chain = _acme_chain(acme)
    return key, key_path, x5u, chain[0].serial_number


def _acme_chain(acme: AcmeSettings) -> tuple[Any, str, str, list[x509.Certificate]]:
    """:func:`acme_material` with the whole chain of ``sp.pem`` instead of the serial."""
    import orjson

    state = Path(acme.state_dir)
    if not (state / "cert.json").exists():
        raise KeyMaterialError(f"{acme.where}: no certificate in {str(state)!r} yet")
    try:
        meta = orjson.loads((state / "cert.json").read_bytes())
        key = load_private_key(state / "sp.key")
        chain = load_certificates((state / "sp.pem").read_bytes())
        leaf = chain[0]
    except (OSError, StirShakenError, ValueError) as exc:
        raise KeyMaterialError(f"{acme.where}: cannot load the certificate state in {str(state)!r}: {exc}") from None
    x5u = meta.get("x5u") if isinstance(meta, dict) else None
    if not isinstance(x5u, str) or not x5u:
        raise KeyMaterialError(f"{acme.where}: the certificate in {str(state)!r} has no x5u URL (set cr_url, or use an STI-CA that publishes)")
    if leaf.public_key().public_numbers() != key.public_key().public_numbers():
        raise KeyMaterialError(f"{acme.where}: sp.key does not belong to sp.pem in {str(state)!r} (renewal in progress?)")
    if meta.get("serial") != format(leaf.serial_number, "x"):
        raise KeyMaterialError(f"{acme.where}: cert.json does not describe sp.pem in {str(state)!r} (renewal in progress?)")
    return key, str(state / "sp.key"), x5u, chain


def _where(t: TenantConfig) -> str:
    return t.acme.where if t.acme is not None else f"signer {t.name!r}"


def _guard(t: TenantConfig, chain: Sequence[x509.Certificate], source: str, now: float) -> None:
    """:func:`signing_certificate_fault` for signer ``t`` and the chain read from ``source``."""
    assert t.key is not None
    fault = signing_certificate_fault(t.key, chain, dt.datetime.fromtimestamp(now, dt.timezone.utc))
    if fault is not None:
        raise KeyMaterialError(f"{_where(t)}: {fault} ({source})")


def load_signers(cfg: SigningConfig, *, now: float | None = None) -> SigningConfig:
    """``cfg`` with every signer's key and certificate chain read again: from its ``key`` and
    ``certificate`` files, or from its ACME state directory (key, chain and x5u), and guarded:
    the x5u follows the x5u rule (:func:`~stirshaken.core.x5u.check_x5u_url` with
    ``allow_http_x5u`` / ``allow_private_x5u``), and a known certificate must hold the key, be
    within its validity period at ``now`` (default: the clock) and carry TNAuthList.  Raises
    :class:`KeyMaterialError` (one line naming the signer)."""
    at = time.time() if now is None else now

    def load(t: TenantConfig) -> TenantConfig:
        if t.acme is not None:
            key, key_path, x5u, chain = _acme_chain(t.acme)
            t = t.model_copy(update={"key": key, "key_path": key_path, "x5u": x5u, "chain": tuple(chain)})
            source = str(Path(t.acme.state_dir) / "sp.pem")
        else:
            try:
                t = t.model_copy(update={"key": load_private_key(t.key_path)})
            except (OSError, StirShakenError) as exc:
                raise KeyMaterialError(f"signer {t.name!r}: cannot read private key {t.key_path!r}: {exc}") from None
            source = t.certificate
            if source:
                try:
                    chain = load_certificates(Path(source).read_bytes())
                except OSError as exc:
                    raise KeyMaterialError(f"signer {t.name!r}: cannot read certificate {source!r}: {exc.strerror}") from None
                except StirShakenError as exc:
                    raise KeyMaterialError(f"signer {t.name!r}: certificate {source!r}: {exc.description}") from None
                t = t.model_copy(update={"chain": tuple(chain)})
            else:
                t = t.model_copy(update={"chain": ()})
        try:
            check_x5u_url(t.x5u, allow_http=cfg.allow_http_x5u, allow_private=cfg.allow_private_x5u, hints=SIGN_HINTS)
        except StirShakenError as exc:
            if not is_lab_x5u(t.x5u):
                raise KeyMaterialError(f"{_where(t)}: x5u {t.x5u}: {exc.description}") from None
            log.warning("%s: %s; signing anyway, as a loopback x5u is a lab set-up no other host can fetch", _where(t), exc.description)
        if t.chain:
            _guard(t, t.chain, source, at)
        return t

    return cfg.model_copy(
        update={"default": load(cfg.default) if cfg.default is not None else None, "tenants": tuple(load(t) for t in cfg.tenants)}
    )


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


async def verify_x5u(cfg: SigningConfig, *, now: float | None = None) -> SigningConfig:
    """With ``verify_x5u``: fetch every signer's x5u as a verifier would (the SSRF-guarded
    :class:`~stirshaken.vs.x5u.Fetcher`, with ``allow_http_x5u`` / ``allow_private_x5u``) and
    check that its first certificate is the signer's (``certificate`` file or ACME ``sp.pem``);
    a signer without a certificate file has the served chain guarded as
    :func:`load_signers` guards a file, and adopts it (for the expiry gauge).  Returns ``cfg``
    (with those chains); raises :class:`KeyMaterialError`.  Without ``verify_x5u``: ``cfg``."""
    if not cfg.verify_x5u or not cfg.enabled:
        return cfg
    from stirshaken.vs.x5u import Fetcher, X5UPolicy

    at = time.time() if now is None else now
    fetcher = Fetcher(X5UPolicy(allow_http=cfg.allow_http_x5u, allow_private=cfg.allow_private_x5u))
    try:
        async def check(t: TenantConfig) -> TenantConfig:
            try:
                served, _ = await fetcher.fetch_chain(t.x5u)
            except StirShakenError as exc:
                raise KeyMaterialError(f"{_where(t)}: x5u {t.x5u} cannot be checked: {exc.description}") from None
            if t.chain:
                if _der(served[0]) != _der(t.chain[0]):
                    raise KeyMaterialError(
                        f"{_where(t)}: x5u {t.x5u} serves certificate serial {served[0].serial_number:x}, not the signer's"
                        f" serial {t.chain[0].serial_number:x} ({t.certificate or 'ACME sp.pem'})")
                return t
            _guard(t, served, f"served at {t.x5u}", at)
            return t.model_copy(update={"chain": tuple(served)})

        default = await check(cfg.default) if cfg.default is not None else None
        tenants = tuple([await check(t) for t in cfg.tenants])
    finally:
        await fetcher.close()
    return cfg.model_copy(update={"default": default, "tenants": tenants})


def prepare_signers(cfg: SigningConfig) -> SigningConfig:
    """:func:`load_signers` then :func:`verify_x5u`, outside an event loop (start, ``serve
    --check``, the supervisor's SIGHUP).  Raises :class:`KeyMaterialError`."""
    import asyncio

    cfg = load_signers(cfg)
    if cfg.verify_x5u:
        cfg = asyncio.run(verify_x5u(cfg))
    return cfg


def signers_from_file(path: str, current: SigningConfig) -> SigningConfig:
    """``current`` with the signers (``[signing]``'s own and every ``[[signing.tenant]]``) of the
    configuration file at ``path`` read again (SIGHUP): their key, certificate and x5u, and their
    numbers and customers.  The other options of ``[signing]`` stay as they are (a restart applies
    them).  The file is validated completely; a problem raises :class:`KeyMaterialError` with the
    configuration's one line."""
    from stirshaken.serve.config import load_config

    try:
        new = load_config(path).signing
    except ConfigError as exc:
        raise KeyMaterialError(f"configuration {path}: {exc}") from None
    if not new.enabled:
        raise KeyMaterialError(f"configuration {path}: [signing] has no signer any more (restart to stop signing)")
    return current.model_copy(update={"default": new.default, "tenants": new.tenants})


@dataclass(frozen=True)
class Tenant:
    """A configured signer: tenant configuration plus its ready :class:`Signer` (SHAKEN) and
    ``div_signer`` (``ppt=div``, RFC 8946 §3) and ``rcd_signer`` (``ppt=rcd``, RFC 9795), both with
    the same key and x5u; ``spc`` and ``serial`` (hex) of its certificate where known (the per-call
    records): the configured SPC (or the ACME OCN), and the serial of its certificate
    (``certificate``, an ACME signer's ``sp.pem``)."""

    config: TenantConfig
    signer: Signer
    div_signer: Signer = field(repr=False, default=None)  # type: ignore[assignment]
    rcd_signer: Signer = field(repr=False, default=None)  # type: ignore[assignment]
    spc: str | None = None
    serial: str | None = None
    #: ``config.name``, kept as a plain attribute: read on every signed call (counter labels,
    #: records, the inventory's tenant check), where the property it replaces plus the pydantic
    #: attribute read cost ≈ 450 instructions (callgrind, ``bench/bench_inventory.py``)
    name: str = field(init=False, repr=False, compare=False)
    #: the fields that every per-call record of a SHAKEN PASSporT this signer signed over REST
    #: shares (:class:`stirshaken.serve.record_fields.Shared`): a request gives the others
    rest_shared: Shared = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.config.name)
        object.__setattr__(self, "rest_shared", Shared({
            "interface": "rest", "service": "signing", "tenant": self.config.name, "x5u": self.config.x5u, "verstat": None, "status": 200,
            "code": None, "reason": None, "spc": self.spc, "serial": self.serial}))


def _acme_serial(acme: AcmeSettings) -> str | None:
    """The serial (hex) of the certificate in an ACME state directory (``sp.pem``), if readable."""
    from stirshaken.core.certificates import load_certificates

    try:
        return format(load_certificates((Path(acme.state_dir) / "sp.pem").read_bytes())[0].serial_number, "x")
    except (OSError, StirShakenError, ValueError, IndexError):
        return None


class SigningService(InventoryDecisions):
    """Chooses tenant and attestation, then signs; one instance per worker process.

    :meth:`decide` (the attestation of a call) is :meth:`InventoryDecisions.decide`: with an
    inventory the signing hot path, in one Python frame; the policy it applies is written here
    (:meth:`_configured`, :meth:`_combine`, :meth:`_dno`)."""

    def __init__(self, cfg: SigningConfig, *, inventory: LiveInventory | None = None, inventory_cfg: InventoryConfig | None = None):
        self.inventory = inventory
        self._national_logged = -3600.0
        self._national_count = 0
        self.inventory_cfg = inventory_cfg or InventoryConfig()
        self._unknown_attest = self.inventory_cfg.unknown_attest
        self._caller_attest = self.inventory_cfg.caller_attest
        self._dno_refuse = self.inventory_cfg.dno_signing == "refuse"
        self._build(cfg)

    def _build(self, cfg: SigningConfig) -> None:
        def make(t: TenantConfig) -> Tenant:
            if t.key is None:
                raise KeyMaterialError(f"signer {t.name!r}: no key loaded (ACME certificate not obtained yet)")
            serial = format(t.chain[0].serial_number, "x") if t.chain else (_acme_serial(t.acme) if t.acme else None)
            return Tenant(t, Signer(t.key, t.x5u, deterministic=cfg.deterministic),
                          Signer(t.key, t.x5u, ppt="div", deterministic=cfg.deterministic),
                          Signer(t.key, t.x5u, ppt="rcd", deterministic=cfg.deterministic),
                          spc=t.spc or (t.acme.ocn if t.acme else None), serial=serial)

        default = make(cfg.default) if cfg.default is not None else None
        tenants = [make(t) for t in cfg.tenants]
        by_name: dict[str, Tenant] = {}
        for tenant in tenants:
            by_name[tenant.name.lower()] = tenant
            if tenant.config.spc:
                by_name.setdefault(tenant.config.spc.lower(), tenant)
        if default is not None:
            by_name.setdefault("default", default)
            if default.config.spc:
                by_name.setdefault(default.config.spc.lower(), default)
        # (prefix, tenant) longest first, for calling-number routing
        prefixes = sorted(((p, t) for t in tenants for p in t.config.tns), key=lambda x: -len(x[0]))
        if default is not None:
            prefixes += sorted(((p, default) for p in default.config.tns), key=lambda x: -len(x[0]))
        # everything is built: switch (no await in between, so no request sees a mix)
        self.cfg = cfg
        self.default = default
        self.tenants = tenants
        self.by_name = by_name
        self._prefixes = prefixes
        self._dialplan = {"country_code": cfg.country_code, "national_length": cfg.national_length}
        #: the length of a national number (completed with ``country_code``, else warned about)
        self.national_length = cfg.national_length
        #: without a country code, numbers of this (national) length are signed as given with a warning
        self.warn_length = cfg.national_length if cfg.country_code is None else None

    def certificate_expiry(self) -> dict[str, float]:
        """``{tenant name: notAfter}`` (Unix seconds) of every signing certificate this process
        knows: the chain loaded by :func:`load_signers` (a ``certificate`` file, an ACME ``sp.pem``)
        or served at the x5u (``verify_x5u``).  A signer given only as key + x5u URL has its
        certificate behind the URL and is left out.  For ``/metrics`` and ``/healthz``."""
        out: dict[str, float] = {}
        for t in ([self.default] if self.default else []) + self.tenants:
            if t.config.chain:
                out[t.name] = t.config.chain[0].not_valid_after_utc.timestamp()
        return out

    def reload(self, new: SigningConfig | None = None) -> list[str]:
        """Switch to the signers of ``new`` (prepared by :func:`load_signers` and
        :func:`verify_x5u`), or, without it, to every signer's key, certificate (and ACME x5u)
        read again; returns the names of the signers whose key or x5u changed (or that are new).
        Raises :class:`KeyMaterialError` and then keeps the current signers."""
        if new is None:
            new = load_signers(self.cfg)
        old = {t.name: (t.signer, t.config.x5u) for t in ([self.default] if self.default else []) + self.tenants}
        self._build(new)
        changed = []
        for t in ([self.default] if self.default else []) + self.tenants:
            prev = old.get(t.name)
            if prev is None or prev[1] != t.config.x5u or prev[0].key.private_numbers() != t.config.key.private_numbers():  # type: ignore[union-attr]
                changed.append(t.name)
        return changed

    # --- inputs ---------------------------------------------------------------------------------

    def canon(self, value: str, param: str) -> str:
        """RFC 8224 §8.3 canonical TN (a national number completed with ``country_code``) or
        :class:`SigningError` naming ``param`` and saying why (not a number, more than 15
        digits)."""
        try:
            return canonicalize_tn(value, **self._dialplan)  # type: ignore[arg-type]
        except TNError as exc:
            raise SigningError(param, str(value)[:64], str(exc)) from None
        except TypeError:
            raise SigningError(param, str(value)[:64], f"{str(value)[:40]!r} is not a telephone number") from None

    def national_warning(self, value: str, tn: str) -> str | None:
        """The warning for ``tn`` (canonical ``value``) signed as given although it looks like a
        national number, when no ``country_code`` is configured (:func:`~stirshaken.core.tn.national_number`)."""
        if self.warn_length is None or len(tn) != self.warn_length:
            return None
        return national_number(value, tn, self.warn_length)

    def note_national(self, interface: str, warning: str) -> None:
        """Log a number signed as given that looks national (:meth:`national_warning`): at most
        once a minute per worker, with the number of such signatures since the last line."""
        self._national_count += 1
        now = time.monotonic()
        if now - self._national_logged >= 60:
            log.warning("numbers signed as given without a country code (set [signing] country_code)", extra={
                "interface": interface, "example": warning, "count": self._national_count})
            self._national_logged = now
            self._national_count = 0

    @staticmethod
    def attest_input(value: Any, param: str) -> str:
        """``value`` as an attestation level, or :class:`SigningError` naming ``param`` (RFC 8588 §4)."""
        try:
            return check_attest(value)
        except StirShakenError as exc:
            raise SigningError(param, str(value)[:64], exc.description) from None

    @staticmethod
    def origid_input(value: Any, param: str) -> str:
        """``value`` as an origid, or :class:`SigningError` naming ``param`` (RFC 8588 §5: a UUID)."""
        try:
            return check_origid(value)
        except StirShakenError as exc:
            raise SigningError(param, str(value)[:64], exc.description) from None

    def tenant_for(self, orig_tn: str, hint: str | None = None, *, what: str = "calling number") -> Tenant:
        """The tenant signing for ``orig_tn`` (header ``hint`` first, then TN prefix, then default);
        ``what`` names the number in the error (a div PASSporT's is the diverted-from number)."""
        if hint:
            t = self.by_name.get(hint.strip().lower())
            if t is None:
                raise SigningError("tenant", hint[:64], f"no signing tenant named {hint!r}")
            return t
        for prefix, t in self._prefixes:
            if orig_tn.startswith(prefix):
                return t
        if self.default is not None:
            return self.default
        raise SigningError("orig", orig_tn, f"no signing tenant covers {what} {orig_tn}")

    @staticmethod
    def _customer(tenant: Tenant, source_ip: str | None, name: str | None) -> CustomerConfig | None:
        custs = tenant.config.customers
        if name:
            low = name.strip().lower()
            for c in custs:
                if c.name.lower() == low:
                    return c
        for c in custs:
            if c.matches_source(source_ip):
                return c
        return None

    def attest_for(self, tenant: Tenant, orig_tn: str, *, source_ip: str | None = None, customer: str | None = None) -> str:
        """Attestation level by policy (ATIS-1000074 §5.2.3), see the module docstring."""
        cust = self._customer(tenant, source_ip, customer)
        if cust is not None:
            return "A" if cust.owns(orig_tn) else "B"
        # customers without source restrictions: traffic only comes through the trusted edge
        for c in tenant.config.customers:
            if not c.sources and c.owns(orig_tn):
                return "A"
        if any(not c.sources for c in tenant.config.customers):
            return "B"
        return tenant.config.default_attest

    # --- the rules of InventoryDecisions.decide --------------------------------------------------

    def _configured(self, tenant: Tenant, orig_tn: str, requested: str | None, source_ip: str | None, customer: str | None) -> str:
        """Without an inventory: ``requested`` (the caller's level) when given, else
        :meth:`attest_for`."""
        return requested if requested else self.attest_for(tenant, orig_tn, source_ip=source_ip, customer=customer)

    def _combine(self, requested: str | None, level: str) -> str:
        """The inventory's ``level`` with the caller's (``requested``, when given) per
        ``caller_attest``: ``lower`` the weaker of the two, ``caller`` the caller's, ``inventory``
        the inventory's."""
        if requested:
            mode = self._caller_attest
            if mode == "lower":
                return requested if requested > level else level  # "A" < "B" < "C": the larger letter is the weaker level
            if mode == "caller":
                return requested
        return level

    def _dno(self, inv: LiveInventory, orig_tn: str) -> str:
        """A calling number on a Do-Not-Originate list (never A or B): :class:`DnoRefused` with
        ``dno_signing = "refuse"``, else ``C``; counted either way."""
        if self._dno_refuse:
            inv.dno_refused += 1
            raise DnoRefused(orig_tn)
        inv.dno_downgraded += 1
        return "C"

    # --- signing --------------------------------------------------------------------------------

    def sign(self, tenant: Tenant, *, orig: str, dest: list[str], attest: str, iat: int | None = None, origid: str | None = None) -> str:
        """Identity header value for canonical ``orig``/``dest`` (RFC 8224 §4, RFC 8588 §4); ``origid``
        defaults to a new UUID and ``iat`` to now."""
        return tenant.signer.identity_for(orig, dest, attest, iat, origid)

    def sign_div(self, tenant: Tenant, *, orig: str, dest: list[str], div: str, iat: int | None = None) -> str:
        """Identity header value of a ``div`` PASSporT (RFC 8946 §3) for canonical TNs: ``orig`` as in
        the call's PASSporT, ``dest`` the new target, ``div`` the previous destination.  Raises
        :class:`SigningError` (param ``dest``) when the destination did not change (§3: no div
        PASSporT then)."""
        try:
            claims = div_claims(orig=orig, dest=dest, div=div, iat=iat)
        except StirShakenError as exc:
            raise SigningError("dest", ",".join(dest)[:64], exc.description) from None
        return tenant.div_signer.identity_claims(claims)

    def sign_rcd(self, tenant: Tenant, *, orig: str, dest: list[str], rcd: dict[str, Any], digests: dict[str, str],
                 crn: str | None = None, iat: int | None = None) -> str:
        """Identity header value of an ``rcd`` PASSporT (RFC 9795; docs/requirements.md RC-01) for
        canonical TNs: ``rcd`` holds ``nam``/``jcd``/``jcl``/``icn``, ``digests`` the integrity
        strings of the content at ``jcl``/``icn`` (``{"/icn": "sha256-…"}``; ``/jcd`` is computed
        here).  A ``jcl``/``icn`` URL must pass the x5u rule with ``[signing]``'s relaxations (the
        verifier fetches it under that rule).  Raises :class:`SigningError` naming the member."""
        unknown = sorted(set(rcd) - {"nam", "jcd", "jcl", "icn"})
        if unknown:
            raise SigningError(f"rcd.{unknown[0][:20]}", str(rcd[unknown[0]])[:64], "not a member this signer writes (nam, jcd, jcl, icn)")
        if "nam" in rcd and type(rcd["nam"]) is not str:
            raise SigningError("rcd.nam", str(rcd["nam"])[:64], "not a string")
        for name in ("jcl", "icn"):
            if name in rcd:
                url = rcd[name]
                try:
                    check_x5u_url(url, allow_http=self.cfg.allow_http_x5u, allow_private=self.cfg.allow_private_x5u,
                                  what=f"rcd.{name}", hints=SIGN_HINTS)
                except StirShakenError as exc:
                    raise SigningError(f"rcd.{name}", str(url)[:64], exc.description) from None
        try:
            claims = rcd_claims(orig=orig, dest=dest, nam=rcd.get("nam"), jcd=rcd.get("jcd"), jcl=rcd.get("jcl"), icn=rcd.get("icn"),
                                crn=crn, digests=digests, iat=iat)
        except StirShakenError as exc:
            raise SigningError("rcd", "", exc.description) from None
        return tenant.rcd_signer.identity_claims(claims)
