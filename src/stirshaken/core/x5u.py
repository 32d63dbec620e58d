"""The ``x5u`` URL rule (ATIS-1000074 v003 §5.3.1, ATIS-1000080 §5.x; docs/requirements.md VS-02 /
CR-01), written once for both sides: the verifier refuses to dereference a URL that breaks it
(:mod:`stirshaken.vs.x5u`), and the signer refuses to put one in a PASSporT (``stirshaken sign``,
``[signing]``), since every verifier with this policy would reject the call.

* scheme ``https`` only (``http`` only with ``allow_http``), port 443 or 8443;
* no userinfo, no query, no fragment, no path parameters (``;``); at most 2048 printable ASCII
  characters;
* an IP-literal host must be a globally routable unicast address and the host may not be
  ``localhost``, unless ``allow_private`` (which also lifts the port rule).

Pure: names that need resolving are judged by the fetcher's resolver guard at connection time
(:class:`stirshaken.vs.x5u.GuardedResolver`), where the checked address is the connected one.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urlsplit

from stirshaken.core.errors import FetchError

__all__ = ["DEFAULT_PORTS", "SIGN_HINTS", "VERIFY_HINTS", "address_allowed", "check_x5u_url", "is_lab_x5u"]

#: the ports an x5u URL may name without ``allow_private``
DEFAULT_PORTS = frozenset({443, 8443})


def address_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for a globally routable unicast address (RFC 6890 special-purpose ranges refused)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


#: how to lift each relaxable refusal on the verifying side: the command-line flag and the TOML option
VERIFY_HINTS = ("allow with --allow-http-x5u / [verification].allow_http_x5u",
                "allow with --allow-private-x5u / [verification].allow_private_x5u, lab only")
#: the same on the signing side (``stirshaken sign`` and ``[signing]``)
SIGN_HINTS = ("allow with --allow-http-x5u / [signing].allow_http_x5u",
              "allow with --allow-private-x5u / [signing].allow_private_x5u, lab only")


def _shown(url: str) -> str:
    """The URL as quoted in an error: whole up to 120 characters, else its origin and ``/...``
    (cut at a path boundary, never inside a word)."""
    if len(url) <= 120:
        return url
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/..."


def check_x5u_url(url: str, *, allow_http: bool = False, allow_private: bool = False, what: str = "x5u",
                  hints: tuple[str, str] = VERIFY_HINTS) -> SplitResult:
    """Check an x5u URL (or, with ``what``, a CRL or CA-list URL) against the rule above;
    returns the split URL.

    Raises :class:`~stirshaken.core.errors.FetchError` (436 Bad Identity Info, ATIS-1000082 E7)
    whose description names the broken rule and, for a refusal an option lifts, the option
    (``hints``: the http and the private-address option of the interface), e.g. ``x5u
    http://cr.example/sp.pem refused: not https (ATIS-1000074 §5.3.1; allow with
    --allow-http-x5u / [verification].allow_http_x5u)``.
    """
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise FetchError("Invalid 'info' URI: empty or longer than 2048 characters")
    if any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in url):
        raise FetchError("Invalid 'info' URI: contains whitespace, control or non-ASCII characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchError(f"Invalid 'info' URI: {exc}") from None

    def refused(why: str) -> FetchError:
        return FetchError(f"{what} {_shown(url)} refused: {why}")

    scheme = parts.scheme.lower()
    if scheme == "http":
        if not allow_http:
            raise refused(f"not https (ATIS-1000074 §5.3.1; {hints[0]})")
    elif scheme != "https":
        raise refused(f"URL scheme {scheme!r} is not http(s)" if allow_http else f"URL scheme {scheme!r} is not https")
    if "@" in parts.netloc:
        raise refused("the URL must not contain userinfo")
    if parts.query or url.endswith("?"):
        raise refused("the URL must not contain a query component")
    if parts.fragment or "#" in url:
        raise refused("the URL must not contain a fragment")
    if ";" in parts.path:
        raise refused("the URL must not contain path parameters")
    host = parts.hostname
    if not host:
        raise refused("the URL has no host")
    if port is None:
        port = 443 if scheme == "https" else 80
    if not allow_private:
        allowed_ports = DEFAULT_PORTS | ({80} if scheme == "http" else set())
        if port not in allowed_ports:
            raise refused(f"port {port} is not 443 or 8443{' (or 80 for http)' if scheme == 'http' else ''} ({hints[1]})")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None and not address_allowed(ip):
            raise refused(f"host {host} is a private, loopback or reserved address ({hints[1]})")
        if ip is None and (host.lower() == "localhost" or host.lower().endswith(".localhost")):
            raise refused(f"host {host} is localhost ({hints[1]})")
    return parts


def is_lab_x5u(url: str) -> bool:
    """True when ``url`` breaks the rule only by being a lab URL: its host is a loopback address or
    ``localhost`` (http and any port allowed), and it keeps every other part of the rule.

    The signing side signs such an x5u with a warning instead of refusing it: no verifier
    elsewhere can fetch it, so it can only be a test set-up on this host (the project's own
    contract checks and the testbed run so), while an http or private x5u on any other host is
    refused unless ``allow_http_x5u`` / ``allow_private_x5u``.  The verifier never relaxes."""
    try:
        parts = check_x5u_url(url, allow_http=True, allow_private=True)
    except FetchError:
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
