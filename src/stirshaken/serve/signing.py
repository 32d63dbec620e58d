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

Key material comes from the configured key files, or, for a signer with ``[...acme]``, from its
ACME state directory (``sp.key``, ``sp.pem``, ``cert.json``, written by
:func:`stirshaken.pki.acme_client.ensure_certificate`).  :func:`load_signers` reads it; :meth:`SigningService.reload`
swaps it in between two requests (SIGHUP, or after a certificate renewal).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stirshaken.serve.config import AcmeSettings, CustomerConfig, InventoryConfig, SigningConfig, TenantConfig
from stirshaken.serve.inventory.index import LiveInventory
from stirshaken.core.errors import StirShakenError
from stirshaken.core.keys import load_private_key
from stirshaken.core.passport import Signer
from stirshaken.core.tn import TNError, canonicalize_tn

__all__ = ["DnoRefused", "KeyMaterialError", "SigningError", "SigningService", "Tenant", "acme_material", "load_signers"]

ATTEST = frozenset({"A", "B", "C"})


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
    import orjson

    from stirshaken.core.certificates import load_certificates

    state = Path(acme.state_dir)
    if not (state / "cert.json").exists():
        raise KeyMaterialError(f"{acme.where}: no certificate in {str(state)!r} yet")
    try:
        meta = orjson.loads((state / "cert.json").read_bytes())
        key = load_private_key(state / "sp.key")
        leaf = load_certificates((state / "sp.pem").read_bytes())[0]
    except (OSError, StirShakenError, ValueError) as exc:
        raise KeyMaterialError(f"{acme.where}: cannot load the certificate state in {str(state)!r}: {exc}") from None
    x5u = meta.get("x5u") if isinstance(meta, dict) else None
    if not isinstance(x5u, str) or not x5u:
        raise KeyMaterialError(f"{acme.where}: the certificate in {str(state)!r} has no x5u URL (set cr_url, or use an STI-CA that publishes)")
    if leaf.public_key().public_numbers() != key.public_key().public_numbers():
        raise KeyMaterialError(f"{acme.where}: sp.key does not belong to sp.pem in {str(state)!r} (renewal in progress?)")
    if meta.get("serial") != format(leaf.serial_number, "x"):
        raise KeyMaterialError(f"{acme.where}: cert.json does not describe sp.pem in {str(state)!r} (renewal in progress?)")
    return key, str(state / "sp.key"), x5u, leaf.serial_number


def load_signers(cfg: SigningConfig) -> SigningConfig:
    """``cfg`` with every signer's key read again: from its key file, or from its ACME state
    directory (key and x5u).  Raises :class:`KeyMaterialError`."""

    def load(t: TenantConfig) -> TenantConfig:
        if t.acme is not None:
            key, key_path, x5u, _ = acme_material(t.acme)
            return t.model_copy(update={"key": key, "key_path": key_path, "x5u": x5u})
        try:
            return t.model_copy(update={"key": load_private_key(t.key_path)})
        except (OSError, StirShakenError) as exc:
            raise KeyMaterialError(f"signer {t.name!r}: cannot read private key {t.key_path!r}: {exc}") from None

    return cfg.model_copy(
        update={"default": load(cfg.default) if cfg.default is not None else None, "tenants": tuple(load(t) for t in cfg.tenants)}
    )


@dataclass(frozen=True)
class Tenant:
    """A configured signer: tenant configuration plus its ready :class:`Signer`; ``spc`` and
    ``serial`` (hex) of its certificate where known (the per-call records): the configured SPC (or
    the ACME OCN), and the serial of an ACME signer's ``sp.pem``."""

    config: TenantConfig
    signer: Signer
    spc: str | None = None
    serial: str | None = None

    @property
    def name(self) -> str:
        return self.config.name


def _acme_serial(acme: AcmeSettings) -> str | None:
    """The serial (hex) of the certificate in an ACME state directory (``sp.pem``), if readable."""
    from stirshaken.core.certificates import load_certificates

    try:
        return format(load_certificates((Path(acme.state_dir) / "sp.pem").read_bytes())[0].serial_number, "x")
    except (OSError, StirShakenError, ValueError, IndexError):
        return None


class SigningService:
    """Chooses tenant and attestation, then signs; one instance per worker process."""

    def __init__(self, cfg: SigningConfig, *, inventory: LiveInventory | None = None, inventory_cfg: InventoryConfig | None = None):
        self.inventory = inventory
        self.inventory_cfg = inventory_cfg or InventoryConfig()
        self._unknown_attest = self.inventory_cfg.unknown_attest
        self._caller_attest = self.inventory_cfg.caller_attest
        self._build(cfg)

    def _build(self, cfg: SigningConfig) -> None:
        def make(t: TenantConfig) -> Tenant:
            if t.key is None:
                raise KeyMaterialError(f"signer {t.name!r}: no key loaded (ACME certificate not obtained yet)")
            return Tenant(t, Signer(t.key, t.x5u, deterministic=cfg.deterministic), t.spc or (t.acme.ocn if t.acme else None),
                          _acme_serial(t.acme) if t.acme else None)

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

    def certificate_expiry(self) -> dict[str, float]:
        """``{tenant name: notAfter}`` (Unix seconds) of every signing certificate this process
        knows: those of ACME-managed signers (``sp.pem`` of the state directory).  A signer given as
        key + x5u URL has its certificate only behind the URL and is left out; so is an unreadable
        state.  For ``/metrics`` and ``/healthz``."""
        from stirshaken.core.certificates import load_certificates

        out: dict[str, float] = {}
        for t in ([self.default] if self.default else []) + self.tenants:
            acme = t.config.acme
            if acme is None:
                continue
            try:
                leaf = load_certificates((Path(acme.state_dir) / "sp.pem").read_bytes())[0]
            except (OSError, StirShakenError, ValueError, IndexError):
                continue
            out[t.name] = leaf.not_valid_after_utc.timestamp()
        return out

    def reload(self) -> list[str]:
        """Read every signer's key (and ACME x5u) again and switch to them; returns the names of
        the signers whose key or x5u changed.  Raises :class:`KeyMaterialError` and then keeps the
        current signers."""
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
        """RFC 8224 §8.3 canonical TN or :class:`SigningError` naming ``param``."""
        try:
            return canonicalize_tn(value, **self._dialplan)  # type: ignore[arg-type]
        except (TNError, TypeError):
            raise SigningError(param, str(value)[:64], f"{value!r} is not a telephone number") from None

    def tenant_for(self, orig_tn: str, hint: str | None = None) -> Tenant:
        """The tenant signing for ``orig_tn`` (header ``hint`` first, then TN prefix, then default)."""
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
        raise SigningError("orig", orig_tn, f"no signing tenant covers calling number {orig_tn}")

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

    def decide(
        self,
        tenant: Tenant,
        orig_tn: str,
        *,
        requested: str | None = None,
        source_ip: str | None = None,
        customer: str | None = None,
        credential: str | None = None,
    ) -> str:
        """The attestation to sign canonical ``orig_tn`` with (ATIS-1000074 §5.2.3).

        Without an inventory: ``requested`` (the caller's level) when given, else
        :meth:`attest_for`.  With one: a DNO number raises :class:`DnoRefused` or gets ``C``
        (``dno_signing``); otherwise the customer recognised by ``customer`` (header value),
        ``credential`` (REST bearer token), ``source_ip`` or the tenant gets its own level (A)
        for its numbers, its other level (B) for the rest, and no customer ``unknown_attest``
        (C); ``requested`` is then combined per ``caller_attest``."""
        inv = self.inventory
        if inv is None:
            return requested if requested else self.attest_for(tenant, orig_tn, source_ip=source_ip, customer=customer)
        level = inv.index.level(orig_tn, source_ip, customer, credential, tenant.config.name, self._unknown_attest)
        if level is None:  # Do-Not-Originate
            if self.inventory_cfg.dno_signing == "refuse":
                inv.dno_refused += 1
                raise DnoRefused(orig_tn)
            inv.dno_downgraded += 1
            return "C"
        if requested:
            mode = self._caller_attest
            if mode == "lower":
                return requested if requested > level else level  # "A" < "B" < "C": the larger letter is the weaker level
            if mode == "caller":
                return requested
        return level

    # --- signing --------------------------------------------------------------------------------

    def sign(self, tenant: Tenant, *, orig: str, dest: list[str], attest: str, iat: int | None = None, origid: str | None = None) -> str:
        """Identity header value for canonical ``orig``/``dest`` (RFC 8224 §4, RFC 8588 §4); ``origid``
        defaults to a new UUID and ``iat`` to now."""
        return tenant.signer.identity_for(orig, dest, attest, iat, origid)
