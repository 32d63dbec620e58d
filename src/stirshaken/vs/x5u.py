"""Dereferencing the ``x5u`` / ``info`` URL of a PASSporT (RFC 8224 §6.2 step 3) safely.

Rules (ATIS-1000074 v003 §5.3.1 and ATIS-1000080 §5.x, docs/requirements.md VS-02 / CR-01):

* scheme ``https`` only (``http`` only with :attr:`X5UPolicy.allow_http`), port 443 or 8443;
* no userinfo, no query, no fragment, no path parameters (``;``) (the URL rule itself is
  :func:`stirshaken.core.x5u.check_x5u_url`, shared with the signer);
* no HTTP redirects are followed;
* the name is resolved by us and every address is checked before connecting: private,
  loopback, link-local, multicast, reserved and unspecified addresses are refused unless
  :attr:`X5UPolicy.allow_private` (which also lifts the port rule).  The check lives in an
  aiohttp resolver, so the address that was checked is the address that is connected to (no
  DNS-rebinding window between check and use); IP literals, which aiohttp does not resolve, are
  checked in :func:`check_url`.
* response size cap, connect timeout and total timeout;
* the body is a PEM chain (leaf first, then intermediates; ATIS-1000080 CR-02) or one DER
  certificate (``application/pkix-cert``).

:func:`check_url` and :func:`parse_certificates` are pure; :class:`Fetcher` is the only part that
does I/O.  Every failure raises :class:`~stirshaken.core.errors.FetchError` (436 Bad Identity Info,
ATIS-1000082 E7/E8) with a specific description.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import textwrap
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import SplitResult

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography import x509

from stirshaken.core.certificates import load_certificates
from stirshaken.core.errors import CertificateError, FetchError
from stirshaken.core.x5u import VERIFY_HINTS, address_allowed as _address_allowed, check_x5u_url
from stirshaken.net.http import ResponseTooLargeError, client_session, client_ssl_context, read_capped
from stirshaken.vs.config import VerifierConfig

_DEFAULTS = VerifierConfig.model_fields

#: Content types of a certificate chain: RFC 8555 §9.1, RFC 2585 §4.1, and the types certificate
#: repositories in the field serve (``x-pem-file``, ``x-x509-cert``, ``x-x509-ca-cert``).  The body
#: decides the encoding: PEM or DER is accepted under any of them.
PEM_TYPES = frozenset({"application/pem-certificate-chain", "application/x-pem-file"})
DER_TYPES = frozenset({"application/pkix-cert", "application/x-x509-ca-cert", "application/x-x509-user-cert", "application/x-x509-cert"})
#: Generic types whose body is sniffed (accepted only when it parses as certificates).
SNIFF_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "text/plain"})


@dataclass(frozen=True)
class X5UPolicy:
    """What a fetch may do.  Safe by default; every relaxation is a named option."""

    # the defaults are VerifierConfig's (vs/config.py), the one place they are written
    allow_http: bool = _DEFAULTS["allow_http_x5u"].default
    allow_private: bool = _DEFAULTS["allow_private_x5u"].default
    ca_bundle: str | None = _DEFAULTS["x5u_ca_bundle"].default
    connect_timeout: float = _DEFAULTS["connect_timeout"].default
    fetch_timeout: float = _DEFAULTS["fetch_timeout"].default
    max_bytes: int = _DEFAULTS["max_response_bytes"].default


@dataclass(frozen=True)
class FetchResult:
    """A successful response: body, media type (lower-case, no parameters) and headers."""

    url: str
    body: bytes
    content_type: str
    headers: Mapping[str, str]


class BlockedAddressError(OSError):
    """Raised by :class:`GuardedResolver` when no resolved address may be connected to."""


def check_url(url: str, policy: X5UPolicy = X5UPolicy(), *, what: str = "x5u") -> SplitResult:
    """Check an x5u (or CRL / CA-list) URL against the dereferencing rules
    (:func:`stirshaken.core.x5u.check_x5u_url` with ``policy``'s relaxations); returns the split URL.

    Raises :class:`FetchError` (436) naming the broken rule; a refusal that an option lifts
    names the option (``x5u http://cr.example/sp.pem refused: not https (ATIS-1000074 §5.3.1;
    allow with --allow-http-x5u / [verification].allow_http_x5u)``).
    """
    return check_x5u_url(url, allow_http=policy.allow_http, allow_private=policy.allow_private, what=what)


class GuardedResolver(AbstractResolver):
    """Resolves with the system resolver and drops every address that may not be connected to.

    aiohttp connects to exactly the addresses returned here, so the check and the connection use
    the same address (no DNS-rebinding time-of-check/time-of-use gap).
    """

    def __init__(self, allow_private: bool = False):
        self.allow_private = allow_private

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family)
        out: list[ResolveResult] = []
        refused: list[str] = []
        for fam, _type, proto, _canon, sockaddr in infos:
            addr = str(sockaddr[0])
            try:
                ip = ipaddress.ip_address(addr.split("%", 1)[0])
            except ValueError:
                refused.append(addr)
                continue
            if not self.allow_private and not _address_allowed(ip):
                refused.append(addr)
                continue
            out.append(
                {"hostname": host, "host": addr, "port": int(sockaddr[1]), "family": fam, "proto": proto,
                 "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV}
            )
        if not out:
            if refused:
                raise BlockedAddressError(f"{host} resolves only to refused addresses ({', '.join(sorted(set(refused))[:3])}; "
                                          f"{VERIFY_HINTS[1]})")
            raise OSError(f"{host} does not resolve")
        return out

    async def close(self) -> None:
        return None


def parse_certificates(body: bytes, content_type: str) -> list[x509.Certificate]:
    """The certificates of an x5u response: a PEM chain (leaf first) or one DER certificate.

    ``content_type`` is the media type without parameters.  Any certificate type or generic type
    (:data:`PEM_TYPES`, :data:`DER_TYPES`, :data:`SNIFF_TYPES`) is accepted when the body parses as
    certificates, PEM or DER, whatever the type claims (repositories in the field mislabel them);
    other types (``text/html``), an empty body or a body that is no certificate raise
    :class:`FetchError` (436 Bad Identity Info, RFC 8224 §6.2.2) naming what was wrong.
    """
    ct = content_type.lower()
    if ct not in PEM_TYPES and ct not in DER_TYPES and ct not in SNIFF_TYPES:
        raise FetchError(f"x5u response has Content-Type {textwrap.shorten(content_type, 60, placeholder=' ...')!r}, not a certificate chain")
    if not body.strip():
        raise FetchError("x5u response is empty")
    if b"-----BEGIN" not in body and body[:1] != b"\x30":
        raise FetchError("x5u response holds no PEM certificate (nor a DER one)")
    try:
        return load_certificates(body)
    except CertificateError as exc:
        raise FetchError(f"x5u response is not a certificate chain: {exc.description}") from None


def _short(exc: object) -> str:
    """An exception's text on one line, at most 100 characters, cut between words."""
    return textwrap.shorten(str(exc), 100, placeholder=" ...")


class Fetcher:
    """An aiohttp client bound to one event loop that follows the :class:`X5UPolicy` rules."""

    def __init__(self, policy: X5UPolicy = X5UPolicy()):
        self.policy = policy
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | None = None

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = client_ssl_context(self.policy.ca_bundle, minimum_version=ssl.TLSVersion.TLSv1_2)
        return self._ssl

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # no DNS cache: every connection goes through the guard
            self._session = client_session(
                ssl_context=self._ssl_context(),
                resolver=GuardedResolver(self.policy.allow_private),
                use_dns_cache=False,
                limit=64,
                timeout=self.policy.fetch_timeout,
                connect_timeout=self.policy.connect_timeout,
                headers={"User-Agent": "stirshaken-vs/0.1", "Accept": "application/pem-certificate-chain, application/pkix-cert;q=0.9, */*;q=0.1"},
                auto_decompress=False,
            )
        return self._session

    async def get(self, url: str, *, what: str = "x5u") -> FetchResult:
        """GET ``url`` under the policy; raises :class:`FetchError` (436) on any failure."""
        check_url(url, self.policy, what=what)
        cap = self.policy.max_bytes
        try:
            async with self._get_session().get(url, allow_redirects=False) as resp:
                if 300 <= resp.status < 400:
                    raise FetchError(f"Failed to dereference {what} URI: HTTP {resp.status} redirect not followed")
                if resp.status != 200:
                    raise FetchError(f"Failed to dereference {what} URI: HTTP {resp.status}")
                try:
                    body = await read_capped(resp, cap)
                except ResponseTooLargeError as exc:
                    raise FetchError(f"{what} {exc}") from None
                headers = {k.lower(): v for k, v in resp.headers.items()}
                ctype = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
                return FetchResult(url=url, body=body, content_type=ctype, headers=headers)
        except FetchError:
            raise
        except asyncio.TimeoutError:
            raise FetchError(f"Failed to dereference {what} URI: timed out") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise FetchError(f"Failed to dereference {what} URI: TLS certificate not trusted ({_short(exc.certificate_error)})") from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedAddressError):
                raise FetchError(f"Failed to dereference {what} URI: {exc.os_error}") from None
            raise FetchError(f"Failed to dereference {what} URI: cannot connect ({_short(exc.os_error)})") from None
        except aiohttp.ClientSSLError as exc:
            raise FetchError(f"Failed to dereference {what} URI: TLS error ({_short(exc)})") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise FetchError(f"Failed to dereference {what} URI: {type(exc).__name__}: {_short(exc)}") from None

    async def fetch_chain(self, url: str) -> tuple[list[x509.Certificate], FetchResult]:
        """Fetch and parse an x5u certificate chain."""
        res = await self.get(url)
        return parse_certificates(res.body, res.content_type), res

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
