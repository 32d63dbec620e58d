"""What every command shares for its errors: one ``error: ...`` line on stderr and a non-zero exit.

* :func:`fail` prints the line (markup-free: ``[verification]`` stays as written; newlines and runs
  of blanks become one space, so a message is one line whatever it quotes) and exits.
* :class:`OneLineErrors` is the class of the root command group: a usage error found by the
  option parser (unknown option, missing option, a value of the wrong type or out of range) is one
  line naming the option too, not click's boxed panel (exit status 2).
* The loaders (:func:`read_bytes`, :func:`load_certs`, :func:`load_key`, :func:`directory`,
  :func:`http_url`, :func:`port`) name the file or option at fault and say what is wrong with it
  in words: ``sp.key: a private key, not a certificate``, ``--state-dir x.pem: not a directory``.

Exit statuses: 2 for a usage or file error, 1 for a failure of the operation itself.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn, Optional
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

__all__ = ["OneLineErrors", "directory", "fail", "warn", "http_url", "load_certs", "load_key", "port", "read_bytes", "url_option", "url_problem", "usage_line"]

_err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: <message>`` as one line on stderr and exit with ``code`` (2: usage or file
    error; 1: the operation failed).  ``message`` is plain text (no rich markup)."""
    _err.print(f"[red]error:[/red] {escape(' '.join(str(message).split()))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """Print ``warning: <message>`` as one line on stderr (plain text, no rich markup)."""
    _err.print(f"[yellow]warning:[/yellow] {escape(' '.join(str(message).split()))}", highlight=False, soft_wrap=True)


# --- usage errors of the option parser ---------------------------------------------------------

#: pydantic error types (typer validates option values with pydantic) -> our words
_VALUE_WORDS = {
    "int_parsing": "must be an integer", "int_type": "must be an integer", "int_from_float": "must be an integer",
    "float_parsing": "must be a number", "float_type": "must be a number", "bool_parsing": "must be true or false",
    "path_type": "must be a path",
}
_BOUND_WORDS = {"greater_than_equal": ("must be at least", "ge"), "less_than_equal": ("must be at most", "le"),
                "greater_than": ("must be more than", "gt"), "less_than": ("must be less than", "lt")}


def _param_name(param: Any) -> str:
    """``--out`` for an option (its long name), ``IDENTITY`` for an argument."""
    opts = [o for o in getattr(param, "opts", []) if o.startswith("--")] or list(getattr(param, "opts", []))
    if getattr(param, "param_type_name", "") == "option" and opts:
        return max(opts, key=len)
    return str(getattr(param, "name", "") or "argument").upper()


def _value_problem(exc: BaseException) -> Optional[str]:
    """The first pydantic error behind a bad option value, in words (None if there is none)."""
    cause = exc.__cause__
    errors = getattr(cause, "errors", None)
    if not callable(errors):
        return None
    try:
        err = errors(include_url=False)[0]
    except (IndexError, TypeError):
        return None
    kind, ctx, value = err.get("type"), err.get("ctx") or {}, err.get("input")
    if kind in _VALUE_WORDS:
        words = _VALUE_WORDS[kind]
    elif kind in _BOUND_WORDS and _BOUND_WORDS[kind][1] in ctx:
        words = f"{_BOUND_WORDS[kind][0]} {ctx[_BOUND_WORDS[kind][1]]}"
    else:
        words = str(err.get("msg", "")).replace("Input should be", "must be")
    if value is None:
        return words
    shown = value if isinstance(value, str) and value and not any(c.isspace() for c in value) else repr(value)
    return f"{words}, got {shown}"


def usage_line(exc: Exception) -> str:
    """One line for a usage error of the option parser (click's ``UsageError`` family): the
    option or argument at fault and the problem, then where the command's help is."""
    param = getattr(exc, "param", None)
    name = _param_name(param) if param is not None else None
    if type(exc).__name__ == "MissingParameter" and name:
        text = f"missing {'option' if name.startswith('-') else 'argument'} {name}"
    elif isinstance(exc, typer.BadParameter) and name:
        text = f"{name}: {_value_problem(exc) or exc.message}"
    else:
        fmt = getattr(exc, "format_message", None)
        text = fmt() if callable(fmt) else str(exc)
    text = text.rstrip(".")
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None and getattr(ctx, "command_path", "") else ""
    return text[:1].lower() + text[1:] + hint


class OneLineErrors(TyperGroup):
    """The root group of the command line: runs the command as click does, but a usage error is
    one ``error:`` line (:func:`usage_line`, exit status 2) instead of a usage block and a panel.
    ``stirshaken`` and ``stirshaken GROUP`` without a command still print their help (exit 2)."""

    def main(self, args: Any = None, prog_name: Optional[str] = None, complete_var: Optional[str] = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help is already printed
                sys.exit(2)
            if not hasattr(exc, "format_message"):  # not a usage or click error
                raise
            try:
                fail(usage_line(exc), int(getattr(exc, "exit_code", 2) or 2))
            except typer.Exit as done:
                sys.exit(done.exit_code)
        except typer.Abort:
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


# --- files and values ----------------------------------------------------------------------------


def read_bytes(path: Path, what: str) -> bytes:
    """The bytes of ``path``; a missing, unreadable or directory path is one line naming it
    (``cannot read CSR x.csr: No such file or directory``, exit 2)."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        fail(f"cannot read {what} {path}: {exc.strerror or exc}", 2)


def load_certs(path: Path, what: str = "certificate") -> list[Any]:
    """The certificates of a PEM (or DER) file; a file that holds none is one line naming it and
    saying what it holds instead (``sp.key: a private key, not a certificate``)."""
    from stirshaken.core.certificates import load_certificates
    from stirshaken.core.errors import StirShakenError

    data = read_bytes(path, what)
    try:
        return load_certificates(data)
    except StirShakenError as exc:
        fail(f"{path}: {exc.description}", 2)


def load_key(path: Path, passphrase: Optional[str]) -> Any:
    """A P-256 private key from a PEM file (:func:`stirshaken.core.keys.load_private_key`); any
    problem is one line naming the file."""
    from stirshaken.core.keys import KeyError_, load_private_key

    try:
        return load_private_key(path, passphrase)
    except KeyError_ as exc:
        fail(exc.description, 2)


def directory(path: Path, option: str) -> Path:
    """``path`` as a directory, created if missing; a path that is a file, or cannot be created,
    is one line naming the option (``--state-dir x.pem: not a directory``, exit 2)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        fail(f"{option} {p}: not a directory", 2)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"{option} {p}: cannot create the directory: {exc.strerror or exc}", 2)
    return p


def url_problem(value: str, *, https_only: bool = False) -> Optional[str]:
    """Why ``value`` is not an absolute http(s) URL with a host (only https with ``https_only``);
    None when it is one."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return "not a valid URL"
    schemes = ("https",) if https_only else ("http", "https")
    if parts.scheme.lower() not in schemes or not parts.hostname:
        return f"not an {'https' if https_only else 'http(s)'} URL"
    return None


def http_url(value: Any, option: str, *, https_only: bool = False) -> str:
    """``value`` when it is an absolute http(s) URL with a host (only https with ``https_only``);
    else one line naming the option (``--pa-url 'pa.example': not an http(s) URL``, exit 2)."""
    problem = url_problem(str(value), https_only=https_only)
    if problem:
        fail(f"{option} {str(value)!r}: {problem}", 2)
    return str(value)


def url_option(value: Optional[str]) -> Optional[str]:
    """typer callback of an http(s) URL option: a bad URL is a usage error naming the option."""
    if value is not None and (problem := url_problem(value)):
        raise typer.BadParameter(f"{problem}, got {value}")
    return value


def port(value: Any, option: str = "--port") -> int:
    """``value`` as a TCP port (0-65535; 0 picks a free one); else one line naming the option."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        fail(f"{option}: must be a port number, got {value!r}", 2)
    if not 0 <= n <= 65535:
        fail(f"{option}: must be a port number (0-65535), got {n}", 2)
    return n
