"""STI-CR: the certificate repository the x5u of a PASSporT points at (ATIS-1000080 §5.3,
ATIS-1000074 §5.3.1; docs/requirements.md CR-01..CR-03).

* ``GET /{name}.pem`` answers the PEM chain (leaf first, then intermediates) with
  ``Content-Type: application/pem-certificate-chain`` and ``Cache-Control: public,
  max-age=86400`` (CR-02, CR-03), no redirects, over HTTPS (CR-01; TLS is the server's).
* ``PUT /{name}.pem`` with ``Authorization: Bearer <upload token>`` stores a chain (SP upload);
  the chain must parse, and when trust anchors are configured it must validate to one of them.
* The STI-CA publishes directly through :class:`DBPublisher` (shared database) or
  :class:`HTTPPublisher` (authenticated PUT).

Every request has an access record, every upload (stored or refused) and publication an audit
record (:mod:`stirshaken.pki.records`); the upload token never appears in either.
"""

from __future__ import annotations

import hmac
import logging
import re
from typing import Awaitable, Callable, Mapping, Sequence

from aiohttp import web
from cryptography import x509

from stirshaken.core import certificates as certs
from stirshaken.net.http import client_session
from stirshaken.pki.acme import PEM_CHAIN
from stirshaken.pki.records import access_log, audit
from stirshaken.pki.store import NameTakenError, Database
from stirshaken.core.errors import CertificateError, StirShakenError

log = logging.getLogger("stirshaken.pki.cr")

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.pem")
CACHE_CONTROL = "public, max-age=86400"


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.Response(status=exc.status, text=f"{exc.status} {exc.reason}\n")
    except Exception:  # never a stack trace on the wire
        log.exception("STI-CR internal error on %s %s", request.method, request.path)
        return web.Response(status=500, text="500 internal error\n")


class CertificateRepository:
    """The STI-CR HTTP service over a :class:`Database`."""

    def __init__(
        self,
        db: Database,
        base_url: str,
        *,
        upload_tokens: Mapping[str, str] | None = None,
        trust_anchors: Sequence[x509.Certificate] = (),
    ):
        self.db = db
        self.base = base_url.rstrip("/")
        self.upload_tokens = dict(upload_tokens or {})  # token -> owner
        self.trust = certs.TrustStore(trust_anchors) if trust_anchors else None
        self.app = web.Application(middlewares=[access_log("cr"), _errors], client_max_size=128 * 1024)
        self.app.router.add_get("/{name}", self.h_get)
        self.app.router.add_put("/{name}", self.h_put)
        self.app.router.add_get("/", self.h_index)

    def url_for(self, name: str) -> str:
        return f"{self.base}/{name}"

    def publish(self, name: str, chain_pem: bytes, owner: str | None = None) -> str:
        """Store ``chain_pem`` under ``name``; returns its URL.  Raises
        :class:`~stirshaken.pki.store.NameTakenError` when ``name`` belongs to another owner."""
        return self._publish(name, chain_pem, owner)[0]

    def _publish(self, name: str, chain_pem: bytes, owner: str | None) -> tuple[str, bool]:
        if NAME_RE.fullmatch(name) is None:
            raise ValueError(f"bad repository name {name!r}")
        chain = certs.load_certificates(chain_pem)
        if self.trust is not None:
            self.trust.validate(chain)
        created = self.db.cr_put(name, certs.pem(chain).decode(), owner)
        return self.url_for(name), created

    async def h_index(self, _request: web.Request) -> web.Response:
        return web.json_response({"certificates": [self.url_for(n) for n in self.db.cr_names()]})

    async def h_get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        row = self.db.cr_get(name) if NAME_RE.fullmatch(name) else None
        if row is None:
            raise web.HTTPNotFound()
        return web.Response(
            body=row.chain_pem.encode(),
            content_type=PEM_CHAIN,
            headers={"Cache-Control": CACHE_CONTROL, "Last-Modified": row.updated.strftime("%a, %d %b %Y %H:%M:%S GMT")},
        )

    async def h_put(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        owner = next((o for t, o in self.upload_tokens.items() if token and hmac.compare_digest(t, token)), None)
        name = request.match_info["name"]
        source = request.remote or "-"
        if owner is None:
            audit("cr", "upload refused", warning=True, file=name[:128], reason="no valid upload token" if token else "no upload token",
                  source=source)
            return web.Response(status=401, text="401 upload token required\n", headers={"WWW-Authenticate": "Bearer"})
        if NAME_RE.fullmatch(name) is None:
            audit("cr", "upload refused", warning=True, file=name[:128], owner=owner, reason="bad name", source=source)
            return web.Response(status=400, text="400 name must be [A-Za-z0-9._-]+.pem\n")
        try:  # ownership check and write in one step (Database.cr_put)
            url, created = self._publish(name, await request.read(), owner)
        except NameTakenError:
            audit("cr", "upload refused", warning=True, file=name, owner=owner, reason="name belongs to another uploader", source=source)
            return web.Response(status=403, text="403 that name belongs to another uploader\n")
        except (CertificateError, StirShakenError) as exc:
            audit("cr", "upload refused", warning=True, file=name, owner=owner, reason=exc.description[:200], source=source)
            return web.Response(status=400, text=f"400 {exc.description}\n")
        audit("cr", "upload", file=name, owner=owner, new=created, source=source)
        return web.Response(status=201 if created else 200, text=url + "\n", headers={"Location": url})


class DBPublisher:
    """STI-CA -> STI-CR publication through a shared database."""

    def __init__(self, repo: CertificateRepository):
        self.repo = repo

    async def __call__(self, name: str, chain_pem: bytes) -> str:
        url, created = self.repo._publish(name, chain_pem, "sti-ca")
        audit("cr", "upload", file=name, owner="sti-ca", new=created, source="database")
        return url


class HTTPPublisher:
    """STI-CA -> STI-CR publication with an authenticated PUT."""

    def __init__(self, base_url: str, token: str, *, ca_bundle: str | None = None):
        self.base = base_url.rstrip("/")
        self.token = token
        self.ca_bundle = ca_bundle

    async def __call__(self, name: str, chain_pem: bytes) -> str:
        url = f"{self.base}/{name}"
        async with client_session(ca_bundle=self.ca_bundle) as s:
            async with s.put(url, data=chain_pem, headers={"Authorization": f"Bearer {self.token}", "Content-Type": PEM_CHAIN}) as r:
                if r.status not in (200, 201):
                    raise RuntimeError(f"STI-CR refused the upload: HTTP {r.status}")
        return url
