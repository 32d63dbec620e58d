"""The one configuration schema of the STI-VS: :class:`VerifierConfig`.

The same pydantic model is what a library caller passes to :class:`stirshaken.vs.verifier.Verifier`
and what validates the ``[verification]`` table of ``stirshaken serve`` (``serve/config.py``
extends it with the SIP answer policy only).  Each default is written once, here; the internal
policy objects of the verifier (:class:`~stirshaken.core.verification.VerificationPolicy`,
:class:`~stirshaken.vs.x5u.X5UPolicy`) are derived from a config by :meth:`VerifierConfig.policy`
and :meth:`VerifierConfig.x5u_policy`.  ``X5UPolicy()`` takes its defaults from this model;
the pure core cannot import it, so the freshness / authority defaults are the core's
``DEFAULT_POLICY`` ones, read from there (no number is written twice).

Paths: with the validation context ``{"base": Path}`` (the configuration file's directory)
relative paths are resolved against it and every local file or directory must exist and be
readable; without it (library use) paths are taken as given.  :func:`check_files` loads every
local file with the loaders the verifier uses, so a bad file is reported before a server starts.

Errors: pydantic's :class:`~pydantic.ValidationError`; :func:`describe_error` turns it into one
line naming the option (``[verification].max_age: must be an integer, got '60'``).
"""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Mapping

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, model_validator
from pydantic.functional_validators import AfterValidator

from stirshaken.core.errors import StirShakenError
from stirshaken.core.verification import DEFAULT_POLICY, VerificationPolicy

if TYPE_CHECKING:
    from stirshaken.vs.x5u import X5UPolicy

__all__ = ["OptionError", "VerifierConfig", "check_files", "describe_error", "error_parts", "is_url", "option_name", "tn_prefix"]

_TN_PREFIX = re.compile(r"[0-9#*]{1,15}")
_URL = re.compile(r"https?://", re.IGNORECASE | re.ASCII)


class OptionError(ValueError):
    """An option's value cannot be used: ``loc`` (the option's location below the model being
    validated: a field name, or a path such as ``("tenant", 1, "name")`` with 0-based indexes; ``()``
    for the table itself) and a one-line ``message``.  Raised by :func:`check_files` and by model
    validators, whose errors :func:`describe_error` then places at ``loc``."""

    def __init__(self, option: str | tuple[str | int, ...], message: str):
        self.loc: tuple[str | int, ...] = (option,) if isinstance(option, str) else tuple(option)
        self.option = ".".join(str(x) for x in self.loc)
        self.message = message
        super().__init__(f"{self.option}: {message}" if self.option else message)


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error names the value, it does not dump it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def usable_file(p: Path) -> None:
    """Raise ``ValueError`` (one line) unless ``p`` is an existing, readable file path."""
    try:
        exists = p.exists()
    except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL in it
        raise ValueError(f"{shown(str(p))} is not a usable path ({getattr(exc, 'strerror', None) or exc})") from None
    if not exists:
        raise ValueError(f"{shown(str(p))} does not exist")
    if not os.access(p, os.R_OK):
        raise ValueError(f"{shown(str(p))} is not readable")


def is_url(value: str) -> bool:
    """Whether ``value`` is an http(s) URL (else it names a local file); the one test the
    configuration, the CRL store and the verifier share."""
    return _URL.match(value) is not None


def tn_prefix(value: str) -> str:
    """A telephone number or number prefix as digits (``"+1 215-555"`` → ``"1215555"``, ``"1215*"``
    → ``"1215"``); raises :class:`ValueError` for anything else (1-15 of ``0-9#*``, E.164 §6.1)."""
    t = value.strip().lstrip("+").replace("-", "").replace(" ", "")
    if t.endswith("*") and len(t) > 1 and _TN_PREFIX.fullmatch(t[:-1]):
        t = t[:-1]  # "1215*" is a prefix written with a wildcard
    if _TN_PREFIX.fullmatch(t) is None:
        raise ValueError(f"{shown(value)} is not a telephone number or prefix")
    return t


# --- field types ---------------------------------------------------------------------------------


def _seq(value: Any) -> Any:
    """Lists (TOML arrays, library lists) become tuples; one string is a list of one ("" of none)."""
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list):
        return tuple(value)
    return value


def _none_if_empty(value: Any) -> Any:
    return None if value == "" else value


def _local(value: str, info: ValidationInfo, *, urls: bool, must_exist: bool = True) -> str:
    """Resolve a local path against the context's ``base`` and check it (no-op without a base)."""
    base = (info.context or {}).get("base") if info.context else None
    if base is None or (urls and is_url(value)):
        return value
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", value):  # a URL of a scheme nothing here fetches
        raise ValueError(f"{shown(value)} is neither a file nor an http(s) URL" if urls else f"{shown(value)} is a URL; a local file is expected")
    p = Path(os.path.expanduser(value))
    p = p if p.is_absolute() else Path(base) / p
    if must_exist:
        usable_file(p)
    return str(p)


def _paths(value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
    return tuple(_local(v, info, urls=False) for v in value)


def _sources(value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
    return tuple(_local(v, info, urls=True) for v in value)


def _path(value: str | None, info: ValidationInfo) -> str | None:
    return None if value is None else _local(value, info, urls=False)


def _ca_list(value: str | None, info: ValidationInfo) -> str | None:
    # the list may be (re)written by another process: resolved, not required to exist yet
    return None if value is None else _local(value, info, urls=True, must_exist=False)


def _redis(value: str | None) -> str | None:
    if value is not None and re.match(r"(rediss?|unix)://", value) is None:
        raise ValueError(f"{shown(value)} is not a redis:// URL")
    return value


def _blocks(value: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    out = {}
    for spc, prefixes in value.items():
        try:
            out[spc] = tuple(tn_prefix(p) for p in prefixes)
        except ValueError as exc:
            raise ValueError(f"{spc}: {exc}") from None
    return out


#: PEM files or directories of PEM files.
Files = Annotated[tuple[str, ...], BeforeValidator(_seq), AfterValidator(_paths)]
#: files or http(s) URLs.
Sources = Annotated[tuple[str, ...], BeforeValidator(_seq), AfterValidator(_sources)]
Prefixes = Annotated[tuple[str, ...], BeforeValidator(_seq)]
Seconds = Annotated[float, Field(gt=0, le=86400)]


class VerifierConfig(BaseModel):
    """Configuration of a :class:`~stirshaken.vs.verifier.Verifier` and the ``[verification]``
    table of ``stirshaken serve``; safe defaults, every relaxation a named option.

    Immutable (``frozen``); unknown options are refused (``extra="forbid"``); values are not
    coerced (``strict``: ``"60"`` is not an integer), except that lists become tuples and one
    string stands for a list of one.  Raises :class:`pydantic.ValidationError`.

    Trust (ATIS-1000080 §6.3.8, docs/requirements.md PA-01, CM-12): ``trust_anchors`` PEM files or
    directories of STI-CA roots; ``crls`` CRL files or http(s) URLs; ``crl_signers`` PEM files of
    certificates allowed to sign CRLs for the chains (the STI-PA's indirect SHAKEN CRL), *not*
    trust anchors; ``ca_list`` the STI-PA signed trusted-CA list (file or URL) whose signer must
    chain to ``ca_list_trust``; ``ca_list_refresh`` reload interval in seconds (also reloaded at
    the list's ``exp``; a failed reload keeps the previous list).
    Revocation (ATIS-1000080 §6.3.3, docs/requirements.md VS-10): CRLs are fetched under their own
    rules, http allowed (a CRL is signed) but the x5u address rules kept (:meth:`crl_fetch_policy`);
    ``crl_refresh`` (s) how often CRL files and URLs are read again at most (sooner at their
    ``nextUpdate``); ``crl_unused_ttl`` (s) after which a distribution-point CRL no validated chain
    used is forgotten; ``crl_policy`` ``soft`` (a certificate whose revocation status cannot be
    established verifies, with a ``warning`` check naming the reason) or ``hard`` (437).
    ``max_fetches_per_request``: outbound fetches (x5u and CRL) one verification may start.
    Freshness (RFC 8224 §6.2 step 4): ``max_age``, ``future_skew`` (s), ``require_date``.
    x5u dereferencing (ATIS-1000074 §5.3.1): ``allow_http_x5u``, ``allow_private_x5u``,
    ``x5u_ca_bundle``, ``connect_timeout`` / ``fetch_timeout`` (s; ``x5u_timeout`` is accepted
    as the older name of ``fetch_timeout``), ``max_response_bytes``.
    Certificate cache (VS-03): ``cache_entries``, ``cache_min_ttl`` / ``cache_max_ttl`` /
    ``negative_ttl`` (s); ``fetch_crl_distribution_points``.  ``redis``: shared cache and replay
    store; ``replay_detection`` (438 for a PASSporT verified in another call within the freshness
    window, :mod:`stirshaken.vs.replay`) and ``replay_entries`` (marks kept in memory, 32 bytes
    each).  ``check_authority`` / ``authority_blocks``: orig TN authority
    (SPC → TN prefixes).  ``reason_protocol``: ``STIR`` (RFC 9410) or ``SIP``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    trust_anchors: Files = ()
    crls: Sources = ()
    crl_signers: Files = ()
    ca_list: Annotated[str | None, BeforeValidator(_none_if_empty), AfterValidator(_ca_list)] = None
    ca_list_trust: Files = ()
    ca_list_refresh: Seconds = 3600.0
    max_age: Annotated[int, Field(ge=1, le=86400)] = DEFAULT_POLICY.max_age
    future_skew: Annotated[int, Field(ge=0, le=3600)] = DEFAULT_POLICY.future_skew
    require_date: bool = DEFAULT_POLICY.require_date
    allow_http_x5u: bool = False
    allow_private_x5u: bool = False
    x5u_ca_bundle: Annotated[str | None, BeforeValidator(_none_if_empty), AfterValidator(_path)] = None
    connect_timeout: Seconds = 2.0
    fetch_timeout: Annotated[float, Field(gt=0, le=86400, validation_alias=AliasChoices("fetch_timeout", "x5u_timeout"))] = 4.0
    max_response_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    cache_entries: Annotated[int, Field(ge=1, le=10_000_000)] = 10000
    cache_min_ttl: Annotated[int, Field(ge=0, le=30 * 86400)] = 300
    cache_max_ttl: Annotated[int, Field(ge=0, le=365 * 86400)] = 86400
    negative_ttl: Annotated[int, Field(ge=0, le=86400)] = 30
    fetch_crl_distribution_points: bool = True
    crl_policy: Literal["soft", "hard"] = "soft"
    crl_refresh: Seconds = 3600.0
    crl_unused_ttl: Seconds = 86400.0
    max_fetches_per_request: Annotated[int, Field(ge=1, le=1000)] = 4
    redis: Annotated[str | None, BeforeValidator(_none_if_empty), AfterValidator(_redis)] = None
    replay_detection: bool = False
    replay_entries: Annotated[int, Field(ge=1024, le=1 << 26)] = 1 << 20
    check_authority: bool = DEFAULT_POLICY.check_authority
    authority_blocks: Annotated[dict[str, Prefixes], AfterValidator(_blocks)] = Field(default_factory=dict)
    reason_protocol: Literal["STIR", "SIP"] = DEFAULT_POLICY.reason_protocol  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _one_timeout_name(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "fetch_timeout" in data and "x5u_timeout" in data:
            raise OptionError("x5u_timeout", "give only one of fetch_timeout and x5u_timeout (its older name)")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> VerifierConfig:
        if self.ca_list is not None and not self.ca_list_trust:
            raise ValueError("ca_list_trust: required with ca_list (the STI-PA root(s) the CA list's signer must chain to)")
        if self.cache_min_ttl > self.cache_max_ttl:
            raise ValueError(f"cache_min_ttl: {self.cache_min_ttl} is more than cache_max_ttl ({self.cache_max_ttl})")
        return self

    def policy(self) -> VerificationPolicy:
        """The sans-I/O verification policy these options stand for."""
        return VerificationPolicy(
            max_age=self.max_age,
            future_skew=self.future_skew,
            require_date=self.require_date,
            check_authority=self.check_authority,
            authority_blocks=dict(self.authority_blocks),
            reason_protocol=self.reason_protocol,
        )

    def x5u_policy(self) -> X5UPolicy:
        """What an x5u (or CRL / CA-list) fetch may do under these options."""
        from stirshaken.vs.x5u import X5UPolicy  # aiohttp: not loaded by configuration alone

        return X5UPolicy(
            allow_http=self.allow_http_x5u,
            allow_private=self.allow_private_x5u,
            ca_bundle=self.x5u_ca_bundle,
            connect_timeout=self.connect_timeout,
            fetch_timeout=self.fetch_timeout,
            max_bytes=self.max_response_bytes,
        )

    def crl_fetch_policy(self) -> X5UPolicy:
        """What a CRL fetch may do: as :meth:`x5u_policy`, but plain http is always allowed (the
        CRL is signed, RFC 5280 §5; CRL distribution points are usually http) while the SSRF
        address and port rules stay (``allow_private_x5u`` lifts them for CRLs as for x5u)."""
        import dataclasses

        return dataclasses.replace(self.x5u_policy(), allow_http=True)


# --- files -----------------------------------------------------------------------------------------


def check_files(cfg: VerifierConfig) -> None:
    """Load every local file ``cfg`` names with the loaders the verifier uses: trust anchors,
    CRL signers and CA-list roots (PEM certificates), CRL files (PEM/DER CRLs) and the x5u CA
    bundle (a TLS trust store).  URLs and the CA list itself are not fetched (the verifier does,
    and retries).  Raises :class:`OptionError` naming the option and the file."""
    from stirshaken.vs.crl import CRLStore
    from stirshaken.vs.trust import load_pem_sources

    for option in ("trust_anchors", "crl_signers", "ca_list_trust"):
        for src in getattr(cfg, option):
            try:  # the loader's message names the file at fault (the directory's file, for a directory)
                if not load_pem_sources([src]) and option == "trust_anchors":
                    raise OptionError(option, f"{src}: holds no certificate (a trust anchor directory needs PEM files)")
            except StirShakenError as exc:
                raise OptionError(option, exc.description) from None
    for src in cfg.crls:
        if is_url(src):
            continue
        try:
            CRLStore([src], fetch_distribution_points=False)
        except StirShakenError as exc:
            raise OptionError("crls", exc.description) from None
    if cfg.x5u_ca_bundle:
        bundle = cfg.x5u_ca_bundle
        try:
            data = Path(bundle).read_bytes()
        except OSError as exc:
            raise OptionError("x5u_ca_bundle", f"cannot read {bundle}: {exc.strerror}") from None
        try:
            ssl.create_default_context(cafile=bundle)
        except (ssl.SSLError, OSError):
            from stirshaken.core.certificates import content_problem

            why = content_problem(data, "a certificate") or "no PEM certificate in it"
            raise OptionError("x5u_ca_bundle", f"{bundle}: not a usable CA bundle: {why}") from None


# --- one-line errors -------------------------------------------------------------------------------

_TYPES = {
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "int_from_float": "must be an integer",
    "is_instance_of": "has the wrong type",
}


#: pydantic's bound errors -> (our words, the bound's key in the error context)
_BOUNDS = {"greater_than_equal": ("must be at least", "ge"), "less_than_equal": ("must be at most", "le"),
           "greater_than": ("must be more than", "gt"), "less_than": ("must be less than", "lt")}

_OPTION = re.compile(r"[a-z_][a-z0-9_]*")


def error_parts(err: Mapping[str, Any]) -> tuple[list[str | int], str]:
    """``(location, problem)`` of one pydantic error (an item of ``ValidationError.errors()``).

    A model validator places its error with :class:`OptionError` (or, in the older form, by
    starting the message with ``option: ``); anything else stays at the validated table."""
    loc: list[str | int] = list(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "value_error":
        error = ctx.get("error", err["msg"])
        if isinstance(error, OptionError):
            return loc + list(error.loc), error.message
        msg = str(error)
        option, sep, rest = msg.partition(": ")
        if sep and _OPTION.fullmatch(option):
            loc, msg = loc + [option], rest
        return loc, msg
    if kind == "extra_forbidden":
        return loc, "unknown option"
    if kind == "missing":
        return loc, "required"
    if kind in _TYPES:
        return loc, f"{_TYPES[kind]}, got {shown(value)}"
    if kind in _BOUNDS and _BOUNDS[kind][1] in ctx:
        return loc, f"{_BOUNDS[kind][0]} {ctx[_BOUNDS[kind][1]]}, got {shown(value)}"
    if kind == "literal_error" or kind in _BOUNDS:
        return loc, f"must be {err['msg'].removeprefix('Input should be ')}, got {shown(value)}"
    return loc, str(err["msg"])


def option_name(where: str, loc: list[str | int]) -> str:
    """``where`` (``"[verification]"``) followed by the option path ``loc`` (``.crls[0]``)."""
    name = "".join(f"[{x}]" if isinstance(x, int) else f".{x if len(x) <= 40 else x[:37] + '...'}" for x in loc).lstrip(".")
    return f"{where}.{name}" if where and name else where or name


def describe_error(exc: ValidationError, where: str = "", *, model: type[BaseModel] | None = None) -> str:
    """One line for the first error of ``exc``: ``{where}.{option}[.sub]: problem``.

    ``where`` prefixes the option (``"[verification]"``; empty: the bare option name).  Unknown
    options list the known ones of ``model`` when it is given."""
    err = exc.errors(include_url=False)[0]
    loc, msg = error_parts(err)
    if err["type"] == "extra_forbidden" and model is not None:
        msg += f" (known: {', '.join(sorted(model.model_fields))})"
    prefix = option_name(where, loc)
    return f"{prefix}: {msg}" if prefix else msg
