"""The fields of a per-call record of ``stirshaken serve`` and their JSON text: no I/O, no
database (the signing path builds its :class:`Shared` fields with it; the import contract "the
signing and verification path loads no database" keeps :mod:`stirshaken.serve.records`, which
writes records to databases, out of that path).  :mod:`stirshaken.serve.records` documents the
fields and where records go."""

from __future__ import annotations

from typing import Any, Mapping

import orjson

__all__ = ["FIELDS", "Shared", "as_fields", "json_text", "printable", "valid_value"]

#: the fields of a record, in this order (the text form and the database columns)
FIELDS: tuple[str, ...] = ("interface", "service", "call_id", "origid", "orig", "dest", "tenant", "attest", "x5u", "verstat",
                           "status", "code", "reason", "spc", "serial", "latency")
_N = len(FIELDS)


def _valid_text(v: str) -> str:
    """``v`` as valid Unicode text: the bytes a decoder kept as lone surrogates (an HTTP header
    that is not UTF-8, decoded with ``surrogateescape``) written ``\\xNN``, any other lone
    surrogate ``\\uNNNN``: ``orjson`` refuses such a string, and the UTF-8 of a log line cannot
    hold it."""
    try:
        return v.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return v.encode("utf-8", "backslashreplace").decode("ascii")


def valid_value(v: Any) -> Any:
    """``v`` with its strings, and those of its lists and dicts (nested), made :func:`_valid_text`."""
    if isinstance(v, str):
        return _valid_text(v)
    if isinstance(v, (list, tuple)):
        return [valid_value(x) for x in v]
    if isinstance(v, dict):
        return {k: valid_value(x) for k, x in v.items()}
    return v


def json_text(v: Any) -> str:
    """``v`` in JSON, as a log line may carry it: ``orjson`` (a value of another type as its
    ``str``); strings that are not valid text made :func:`_valid_text` (``orjson`` refuses them);
    the result :func:`printable`."""
    try:
        j = orjson.dumps(v, default=str).decode()
    except TypeError:  # orjson.JSONEncodeError: a string that is not valid text
        j = orjson.dumps(valid_value(v), default=str).decode()
    return j if j.isascii() else printable(j)


class Shared:
    """Fields that a series of records share (a signer's REST signing records: interface,
    service, tenant, x5u, spc, serial...), made ready once: a record ``(shared, rest)``
    (:meth:`~stirshaken.serve.records.Records.add`) is ``shared.fields`` plus the fields of the
    dict ``rest`` (fields not in ``shared``; a field missing from both: None).  Its JSON line gives the shared fields first, then those of
    ``rest``, where ``shared.json`` (their members, made once) saves formatting them per record:
    measured (callgrind, ``bench/bench_records.py --loop log``, 2026-11-30) 2,150 instructions a
    REST signing record fewer (14,370 instead of 16,520 for the record) than a 16-entry dict
    copied from a template and completed.

    ``fields``: a dict of some of :data:`FIELDS` (values of JSON types)."""

    __slots__ = ("fields", "json", "n")

    def __init__(self, fields: Mapping[str, Any]):
        self.fields = {k: fields[k] for k in FIELDS if k in fields}
        self.n = len(self.fields)
        # (the members, then the comma before those of the rest: none when no field is left for it)
        self.json = json_text(self.fields)[1:-1].encode() + (b"," if self.n < _N else b"") if self.fields else b""


def as_fields(rec: Any) -> dict[str, Any]:
    """A record (a dict, or ``(shared, rest)``: :class:`Shared`) as a dict of every field of
    :data:`FIELDS`, in that order (None: not given)."""
    if type(rec) is tuple:
        shared, rest = rec
        return {k: rest.get(k, shared.fields.get(k)) for k in FIELDS}
    return {k: rec.get(k) for k in FIELDS}


def _escape_char(c: str) -> str:
    o = ord(c)
    if o > 0xFFFF:  # a UTF-16 surrogate pair, as JSON writes a character beyond the BMP
        o -= 0x10000
        return f"\\u{0xD800 + (o >> 10):04x}\\u{0xDC00 + (o & 0x3FF):04x}"
    return f"\\u{o:04x}"


def printable(text: str) -> str:
    """``text`` (a JSON line, or a text line whose unusual values are JSON strings) with every
    character that is not printable written as its JSON ``\\u`` escape: C1 controls (U+0080-U+009F;
    U+009B starts a terminal control sequence), line and paragraph separators, and the like,
    which JSON allows raw.  ASCII controls are already escaped by JSON; DEL is left as it is.
    Called only once a line, or the lines of its flush, turned out not to be ASCII (``isascii``
    costs little)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\x7f" else _escape_char(c) for c in text)
