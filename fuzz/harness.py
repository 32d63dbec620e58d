"""The harness shared by the fuzz targets: what a target is, the typed-error check, the mutator.

A :class:`Target` names a parser, the function that runs one input through it (``check``), the
valid samples it is seeded with (``seeds``, made from :class:`fuzz.material.Material`) and a few
tokens of its grammar (``tokens``, a libFuzzer dictionary and the mutator's insertions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

if TYPE_CHECKING:
    from fuzz.material import Material

T = TypeVar("T")

#: most reads :func:`split_reads` cuts a stream into (each is a call through the protocol code)
MAX_READS = 400

#: longest message text a typed error may carry (one clear line, not a dump of the input)
MAX_MESSAGE = 1000


class Finding(AssertionError):
    """A property broken by an input (an untyped exception is reported as itself)."""


@dataclass(frozen=True)
class Target:
    """One parser under fuzzing.

    ``check(data)`` runs one input; it returns normally when every property held.  ``seeds``
    makes valid samples from the shared material; ``tokens`` are pieces of the input grammar;
    ``max_len`` bounds the inputs atheris makes; ``examples`` is the hypothesis budget of the
    short run in the test suite.
    """

    name: str
    check: Callable[[bytes], None]
    seeds: Callable[["Material"], list[bytes]]
    tokens: tuple[bytes, ...] = ()
    max_len: int = 4096
    examples: int = 200
    doc: str = field(default="", compare=False)


def one_line(exc: BaseException) -> None:
    """The error's text must be one clear line: non-empty, no line break, bounded."""
    text = str(exc)
    if not text.strip() or "\n" in text or "\r" in text or len(text) > MAX_MESSAGE:
        raise Finding(f"{type(exc).__name__} is not one clear line: {text[:300]!r}") from exc


def typed(errors: type[BaseException] | tuple[type[BaseException], ...], fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``fn(*args, **kwargs)``; None when it raised one of ``errors`` with a one-line text.
    Any other exception propagates: that is the finding."""
    try:
        return fn(*args, **kwargs)
    except errors as exc:
        one_line(exc)
        return None


def passes(errors: type[BaseException] | tuple[type[BaseException], ...], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Whether ``fn(*args, **kwargs)`` ran through (False: it raised one of ``errors``, one line)."""
    try:
        fn(*args, **kwargs)
    except errors as exc:
        one_line(exc)
        return False
    return True


def outcome(errors: type[BaseException] | tuple[type[BaseException], ...], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """``("ok", value)`` or ``("error", (class name, text))`` of a call: for comparing two ways
    of computing one result (a fast path and its general branch, one feed and many)."""
    try:
        return "ok", fn(*args, **kwargs)
    except errors as exc:
        one_line(exc)
        return "error", (type(exc).__name__, str(exc))


def same(what: str, a: Any, b: Any) -> None:
    if a != b:
        raise Finding(f"{what}: {a!r:.300} != {b!r:.300}")


def text_of(data: bytes) -> str:
    """Input bytes as the text a parser of strings receives (UTF-8; undecodable bytes replaced)."""
    return data.decode("utf-8", "replace")


def split_reads(data: bytes) -> tuple[bytes, list[bytes]]:
    """A stream and the reads a peer delivers it in, both from one input: the first byte picks
    one read, single bytes, reads of a fixed size, or sizes taken from the next eight bytes
    (cycled), at most :data:`MAX_READS` reads (the last takes what is left); the rest of the
    input is the stream."""
    if not data:
        return b"", []
    mode, rest = data[0], data[1:]
    if mode % 4 == 0:
        sizes = [len(rest) or 1]
    elif mode % 4 == 1:
        sizes = [1]
    elif mode % 4 == 2:
        sizes = [1 + mode // 4]
    else:
        sizes = [n or 1 for n in rest[:8]] or [1]
        rest = rest[8:]
    reads, pos, i = [], 0, 0
    while pos < len(rest):
        n = sizes[i % len(sizes)] if i < MAX_READS - 1 else len(rest)
        reads.append(rest[pos : pos + n])
        pos += n
        i += 1
    return rest, reads


# --- the byte mutator of the short run (hypothesis) ------------------------------------------------

#: the mutations: (kind, position, length, random bytes); positions and lengths wrap around the input
Op = tuple[str, int, int, bytes]
OP_KINDS = ("insert", "delete", "replace", "token", "duplicate", "splice", "truncate", "flip")


def mutate(seed: bytes, ops: Sequence[Op], tokens: Sequence[bytes], others: Sequence[bytes]) -> bytes:
    """Apply the byte mutations ``ops`` to ``seed`` (``others``: the inputs a splice takes from)."""
    out = bytearray(seed)
    for kind, pos, length, payload in ops:
        n = len(out)
        at = pos % (n + 1)
        if kind == "insert":
            out[at:at] = payload
        elif kind == "delete":
            del out[at : at + 1 + length % 16]
        elif kind == "replace":
            out[at : at + len(payload)] = payload
        elif kind == "token" and tokens:
            out[at:at] = tokens[length % len(tokens)]
        elif kind == "duplicate" and n:
            piece = out[at : at + 1 + length % 64]
            out[at:at] = piece
        elif kind == "splice" and others:
            other = others[length % len(others)]
            cut = pos % (len(other) + 1)
            out[at:] = other[cut:]
        elif kind == "truncate":
            del out[at:]
        elif kind == "flip" and n:
            out[pos % n] ^= 1 << (length % 8)
    return bytes(out)



def inputs(seeds: Sequence[bytes], tokens: Sequence[bytes], max_len: int) -> Any:
    """The hypothesis strategy of the short run: the seeds as they are, mutated seeds (mostly),
    and random bytes."""
    from hypothesis import strategies as st

    op = st.tuples(st.sampled_from(OP_KINDS), st.integers(0, 1 << 16), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8))
    mutated = st.builds(mutate, st.sampled_from(list(seeds)), st.lists(op, min_size=1, max_size=6), st.just(tuple(tokens)), st.just(tuple(seeds)))
    return st.one_of(mutated, st.sampled_from(list(seeds)), mutated, st.binary(max_size=min(max_len, 512)), mutated)
