"""Framing SIP messages on stream transports (TCP/TLS): :class:`StreamFramer` (RFC 3261 §18.3)."""

from __future__ import annotations

import re
from typing import Final

from stirshaken.core.sip.errors import SipParseError

__all__ = ["MAX_MESSAGE_SIZE", "StreamFramer"]

#: Default upper bound for a framed stream message (headers + body), bytes.
MAX_MESSAGE_SIZE: Final = 64 * 1024

# Line ends between messages (§7.5, RFC 5626 §3.5.1) ...
_KEEPALIVE_RE = re.compile(rb"(?:\r?\n)*+")
# ... and the Content-Length (or compact "l") field in raw bytes.
_CL_BYTES_RE = re.compile(rb"\n(?:content-length|l)[ \t]*+:[ \t]*+([^\r\n]*)", re.I)



class StreamFramer:
    """Split a stream transport's bytes into SIP messages (RFC 3261 §18.3).

    Feed it whatever the socket returned; it returns every complete message
    (header section up to the empty line plus Content-Length body bytes),
    ready for :func:`parse_message`.  Content-Length is mandatory on streams
    (§18.3, §20.14).  CRLFs between messages are skipped (§7.5); every
    double-CRLF keep-alive ping (RFC 5626 §3.5.1) is counted so the caller
    can answer with a single-CRLF pong -- see :meth:`pop_pings`.

    A message larger than *max_message_size* (headers + body), a missing or
    malformed Content-Length raise :class:`SipParseError` (when complete messages
    precede the bad one in the same feed, they are returned first and :attr:`failed`
    is set; the next feed raises).  Such errors are fatal for the stream: the framer stays failed (later :meth:`feed` calls
    raise again) and the connection should be closed.
    """

    __slots__ = ("max_message_size", "_buf", "_scan", "_need", "_crlf_run", "_pings", "_failed")

    def __init__(self, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self.max_message_size = max_message_size
        self._buf = bytearray()
        self._scan = 0  # where to resume looking for the end of the header section
        self._need = -1  # total size of the current message once its headers are in
        self._crlf_run = 0
        self._pings = 0
        self._failed: str | None = None

    @property
    def buffered(self) -> int:
        """Number of bytes held for an incomplete message."""
        return len(self._buf)

    @property
    def pending(self) -> bytes:
        """The bytes held for the incomplete message (after an error: the offending one)."""
        return bytes(self._buf)

    def pop_pings(self) -> int:
        """Number of double-CRLF pings seen since the last call (RFC 5626 §4.4.1)."""
        n, self._pings = self._pings, 0
        return n

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete messages now available."""
        if self._failed is not None:
            raise SipParseError(self._failed)
        buf = self._buf
        buf += data
        out: list[bytes] = []
        try:
            while True:
                if self._need < 0:
                    if not self._skip_keepalives():
                        break
                    body_start = self._find_header_end()
                    if body_start < 0:
                        if len(buf) > self.max_message_size:
                            raise SipParseError(
                                f"header section exceeds {self.max_message_size} bytes"
                            )
                        break
                    self._need = body_start + self._content_length(body_start)
                    if self._need > self.max_message_size:
                        raise SipParseError(
                            f"message of {self._need} bytes exceeds {self.max_message_size} bytes"
                        )
                need = self._need
                if len(buf) < need:
                    break
                out.append(bytes(buf[:need]))
                del buf[:need]
                self._need = -1
                self._scan = 0
        except SipParseError as exc:
            self._failed = str(exc)
            if out:  # the messages before the bad one are whole: deliver them; the next feed raises
                return out
            raise
        return out

    @property
    def failed(self) -> str | None:
        """Why the stream cannot be framed any more (None while it can); set once :meth:`feed`
        met a framing error, possibly after returning the complete messages that preceded it."""
        return self._failed

    def _skip_keepalives(self) -> bool:
        """Drop CR/LF before a start-line; False if nothing else is buffered yet."""
        buf = self._buf
        if not buf:
            return False
        if buf[0] != 13 and buf[0] != 10:
            self._crlf_run = 0
            return True
        m = _KEEPALIVE_RE.match(buf)
        end = m.end() if m is not None else 0
        if end:
            lines = self._crlf_run + buf.count(b"\n", 0, end)
            self._pings += lines // 2
            self._crlf_run = lines % 2
            del buf[:end]
            self._scan = 0
        if not buf or (len(buf) == 1 and buf[0] == 13):
            return False  # empty, or a lone CR waiting for its LF
        self._crlf_run = 0
        return True

    def _find_header_end(self) -> int:
        """Offset of the body (just past the empty line), or -1."""
        buf = self._buf
        scan = self._scan
        p1 = buf.find(b"\n\r\n", scan)
        p2 = buf.find(b"\n\n", scan)
        if p1 < 0 and p2 < 0:
            self._scan = max(0, len(buf) - 2)
            return -1
        if p2 < 0 or 0 <= p1 < p2:
            return p1 + 3
        return p2 + 2

    def _content_length(self, body_start: int) -> int:
        values = _CL_BYTES_RE.findall(self._buf, 0, body_start)
        if not values:
            raise SipParseError("missing Content-Length (mandatory on stream transports, RFC 3261 §18.3)")
        if len(values) > 1:
            raise SipParseError("multiple Content-Length header fields")
        value = values[0].strip(b" \t")
        if not value.isdigit() or len(value) > 10:
            raise SipParseError(f"malformed Content-Length {value[:20]!r}")
        return int(value)

