"""The one exception of the SIP package."""

from __future__ import annotations

__all__ = ["SipParseError"]


class SipParseError(ValueError):
    """Malformed SIP input: the message, a header value or the stream framing.

    Its text is one line naming what is wrong (callers put it in a ``400 Bad Request (...)`` reason
    phrase, RFC 3261 §21.4.1).
    """
