"""Options shared by several commands, declared once.

* :data:`VERIFICATION`: the verification options of ``verify``, ``inspect`` and ``audit``, and
  :func:`verifier_config`, one way from them to a :class:`~stirshaken.vs.config.VerifierConfig`
  (the model of ``[verification]``), so every command has the same names, defaults and one-line
  errors.
* :class:`OptionGroup`: how a group is put into a command (also the options of ``pa|ca|cr serve``).
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, TypeVar

import typer

from stirshaken.cli.common import fail, warn

#: VerifierConfig field -> the option that sets it (for error messages).
FLAGS = {
    "trust_anchors": "--trust-anchor", "crls": "--crl", "crl_signers": "--crl-signer", "ca_list": "--ca-list",
    "ca_list_trust": "--ca-list-trust", "max_age": "--max-age", "x5u_ca_bundle": "--x5u-ca-bundle",
    "crl_policy": "--crl-policy",
}

__all__ = ["FLAGS", "GROUP", "OptionGroup", "VERIFICATION", "fail", "flag_names", "verifier_config", "warn"]


def flag_names(line: str) -> str:
    """``ca_list_trust: required ...`` -> ``--ca-list-trust: required ...``."""
    option, sep, rest = line.partition(": ")
    return f"{FLAGS.get(option.split('[')[0], option)}{sep}{rest}"


def verifier_config(
    *,
    trust_anchor: Optional[Sequence[Path]] = None,
    crl_files: Optional[Sequence[str]] = None,
    crl_signer: Optional[Sequence[Path]] = None,
    ca_list: Optional[str] = None,
    ca_list_trust: Optional[Sequence[Path]] = None,
    max_age: Optional[int] = None,
    allow_http_x5u: Optional[bool] = None,
    allow_private_x5u: Optional[bool] = None,
    x5u_ca_bundle: Optional[Path] = None,
    crl_policy: Optional[str] = None,
    offline: bool = False,
) -> Any:
    """The :class:`VerifierConfig` of the given flags; options not given (None) keep the model's
    defaults (those of ``[verification]``).  ``offline``: chains come from files, nothing is
    fetched (CRL URLs are then refused).  Trust files are loaded now, so a bad one is one line
    naming the flag (exit 2), not a traceback later."""
    from pydantic import ValidationError

    from stirshaken.vs.config import OptionError, VerifierConfig, check_files, describe_error

    if not trust_anchor and not ca_list:
        fail("give --trust-anchor or --ca-list (with --ca-list-trust)", 2)
    try:
        # relative paths are the user's, resolved against the working directory; each file must
        # exist and a URL of another scheme is refused (the same checks as a TOML file's)
        cfg = VerifierConfig.model_validate(dict(
            trust_anchors=[str(p) for p in trust_anchor or ()],
            crls=list(crl_files or []),
            crl_signers=[str(p) for p in crl_signer or ()],
            ca_list=ca_list,
            ca_list_trust=[str(p) for p in ca_list_trust or ()],
            x5u_ca_bundle=str(x5u_ca_bundle) if x5u_ca_bundle else None,
            fetch_crl_distribution_points=not offline,
            **{k: v for k, v in (("max_age", max_age), ("allow_http_x5u", allow_http_x5u), ("allow_private_x5u", allow_private_x5u),
                                 ("crl_policy", crl_policy)) if v is not None},
        ), context={"base": Path.cwd()})
        check_files(cfg)
    except ValidationError as exc:
        fail(flag_names(describe_error(exc)), 2)
    except OptionError as exc:
        fail(f"{FLAGS.get(exc.option, exc.option)}: {exc.message}", 2)
    if offline and any(c.startswith(("http://", "https://")) for c in cfg.crls):
        fail("--crl URLs are fetched; with --cert/--certs (nothing fetched) give CRL files", 2)
    return cfg


# typer option declarations shared by the commands (same flag, same help everywhere)
TRUST_ANCHOR = typer.Option(None, "--trust-anchor", help="Trusted root (PEM file or directory; repeatable; this or --ca-list is required).")
CRL = typer.Option(None, "--crl", help="CRL file or URL (repeatable).")
CRL_SIGNER = typer.Option(None, "--crl-signer", help="Certificate allowed to sign CRLs for the chains, e.g. the STI-PA CRL signer (PEM; repeatable; not a trust anchor).")
CA_LIST = typer.Option(None, "--ca-list", help="STI-PA trusted-CA list (URL or file); its CAs become trust anchors.")
CA_LIST_TRUST = typer.Option(None, "--ca-list-trust", help="STI-PA root the CA list's signer must chain to (PEM; repeatable; required with --ca-list).")
MAX_AGE = typer.Option(None, "--max-age", help="Freshness window for iat/Date in seconds (default: as \\[verification].max_age).")
ALLOW_HTTP_X5U = typer.Option(None, "--allow-http-x5u/--no-allow-http-x5u", help="Allow fetching x5u over plain http (default: as \\[verification]).")
ALLOW_PRIVATE_X5U = typer.Option(None, "--allow-private-x5u/--no-allow-private-x5u", help="Allow x5u on private/loopback addresses and any port (lab only; default: as \\[verification]).")
X5U_CA_BUNDLE = typer.Option(None, "--x5u-ca-bundle", help="Extra CA bundle for https x5u.")
CRL_POLICY = typer.Option(None, "--crl-policy", help="soft: a certificate whose revocation status cannot be established verifies with a warning; "
                          "hard: it fails with 437 (default: as \\[verification].crl_policy, soft).")


F = TypeVar("F", bound=Callable[..., Any])

#: the default of the parameter that receives an :class:`OptionGroup`'s values
GROUP: Any = None


class OptionGroup:
    """Typer options several commands take, each given as ``name=(annotation, default)``.

    ``@group.into("name")`` (below ``@app.command()``) puts the group's options into the
    command's signature where its parameter ``name`` (default :data:`GROUP`) stands, so ``--help``
    lists them there; the command receives their values as one ``dict`` in ``name``.
    """

    def __init__(self, **options: tuple[Any, Any]) -> None:
        self.options = options

    def into(self, name: str) -> Callable[[F], F]:
        def decorate(fn: F) -> F:
            sig = inspect.signature(fn, eval_str=True)
            if name not in sig.parameters:
                raise TypeError(f"{fn.__name__} has no parameter {name!r} for the option group")
            kind = sig.parameters[name].kind
            params: list[inspect.Parameter] = []
            for p in sig.parameters.values():
                if p.name == name:
                    params += [inspect.Parameter(n, kind, annotation=a, default=d) for n, (a, d) in self.options.items()]
                else:
                    params.append(p)

            @functools.wraps(fn)
            def command(*args: Any, **kwargs: Any) -> Any:
                kwargs[name] = {n: kwargs.pop(n) for n in self.options}
                return fn(*args, **kwargs)

            command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
            command.__annotations__ = {p.name: p.annotation for p in params}
            return command  # type: ignore[return-value]

        return decorate


#: the verification options of ``verify``, ``inspect`` and ``audit`` (the keywords of
#: :func:`verifier_config`, ``offline`` aside)
VERIFICATION = OptionGroup(
    trust_anchor=(Optional[List[Path]], TRUST_ANCHOR),
    crl_files=(Optional[List[str]], CRL),
    crl_signer=(Optional[List[Path]], CRL_SIGNER),
    ca_list=(Optional[str], CA_LIST),
    ca_list_trust=(Optional[List[Path]], CA_LIST_TRUST),
    max_age=(Optional[int], MAX_AGE),
    allow_http_x5u=(Optional[bool], ALLOW_HTTP_X5U),
    allow_private_x5u=(Optional[bool], ALLOW_PRIVATE_X5U),
    x5u_ca_bundle=(Optional[Path], X5U_CA_BUNDLE),
    crl_policy=(Optional[str], CRL_POLICY),
)
