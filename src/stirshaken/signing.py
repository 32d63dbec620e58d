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
* ``origid`` (RFC 8588 §5) is a new UUID when not given; ``iat`` (RFC 8225 §5.1.1) comes from the
  request or the clock.

Signing itself uses :class:`stirshaken.passport.Signer`, which caches the encoded JOSE header.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from .config import CustomerConfig, SigningConfig, TenantConfig
from .passport import Signer
from .tn import TNError, canonicalize_tn

__all__ = ["SigningError", "SigningService", "Tenant"]

ATTEST = frozenset({"A", "B", "C"})


class SigningError(ValueError):
    """A request that cannot be signed: ``param`` names the offending input (ATIS SVC4005)."""

    def __init__(self, param: str, value: str, message: str):
        super().__init__(message)
        self.param = param
        self.value = value
        self.message = message


@dataclass(frozen=True)
class Tenant:
    """A configured signer: tenant configuration plus its ready :class:`Signer`."""

    config: TenantConfig
    signer: Signer

    @property
    def name(self) -> str:
        return self.config.name


class SigningService:
    """Chooses tenant and attestation, then signs; one instance per worker process."""

    def __init__(self, cfg: SigningConfig):
        self.cfg = cfg
        self.tenants: list[Tenant] = []
        self.default: Tenant | None = None
        if cfg.default is not None:
            self.default = Tenant(cfg.default, Signer(cfg.default.key, cfg.default.x5u, deterministic=cfg.deterministic))
        self.by_name: dict[str, Tenant] = {}
        for t in cfg.tenants:
            tenant = Tenant(t, Signer(t.key, t.x5u, deterministic=cfg.deterministic))
            self.tenants.append(tenant)
            self.by_name[t.name.lower()] = tenant
            if t.spc:
                self.by_name.setdefault(t.spc.lower(), tenant)
        if self.default is not None:
            self.by_name.setdefault("default", self.default)
            if self.default.config.spc:
                self.by_name.setdefault(self.default.config.spc.lower(), self.default)
        # (prefix, tenant) longest first, for calling-number routing
        self._prefixes = sorted(((p, t) for t in self.tenants for p in t.config.tns), key=lambda x: -len(x[0]))
        if self.default is not None:
            self._prefixes += sorted(((p, self.default) for p in self.default.config.tns), key=lambda x: -len(x[0]))
        self._dialplan = {"country_code": cfg.country_code, "national_length": cfg.national_length}

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

    # --- signing --------------------------------------------------------------------------------

    @staticmethod
    def new_origid() -> str:
        return str(uuid.uuid4())

    def sign(self, tenant: Tenant, *, orig: str, dest: list[str], attest: str, iat: int | None = None, origid: str | None = None) -> str:
        """Identity header value for canonical ``orig``/``dest`` (RFC 8224 §4, RFC 8588 §4)."""
        claims = {
            "attest": attest,
            "dest": {"tn": dest if len(dest) < 2 else sorted(dest)},
            "iat": int(time.time()) if iat is None else iat,
            "orig": {"tn": orig},
            "origid": origid or str(uuid.uuid4()),
        }
        signer = tenant.signer
        return signer.sign_claims(claims) + signer._params
