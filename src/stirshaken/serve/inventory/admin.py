"""The admin REST API of the TN inventory and the Do-Not-Originate lists (``/admin/v1/...``).

Served by the REST front of ``stirshaken serve`` (:class:`stirshaken.serve.rest.RestAPI` hands it
every ``/admin/`` path) when ``[inventory] database`` and an admin token are configured.  Every
request needs ``Authorization: Bearer <token>`` (RFC 6750 §2.1; compared in constant time), else
401 with ``WWW-Authenticate: Bearer``.  Bodies are JSON; answers are JSON, errors
``{"error": {"status", "message"[, "problems": [{"line", "message"}]]}}``.  Database work runs in
a thread so the worker keeps serving calls; a change is applied to the answering worker's index
before the answer, and reaches the other workers and nodes through the change log (at most
``poll_interval`` s, at once on PostgreSQL).

Resources (also in ``/openapi.json``, :func:`openapi_paths`):

* ``GET /admin/v1/inventory``: database counts and this worker's index (version, sizes);
* ``GET|PUT|DELETE /admin/v1/tns/{tn}``: look up, assign (``{"customer": name}``) or remove one
  TN or range ``start-end``;
* ``POST /admin/v1/tns``: bulk import ``{"csv": "tn,customer\\n...", "replace": false,
  "create_customers": false}``, one transaction, 400 with every bad line;
* ``GET /admin/v1/customers``, ``PUT|DELETE /admin/v1/customers/{name}``;
* ``GET /admin/v1/dno``, ``POST /admin/v1/dno`` (``{"source", "listed", "tns": [...],
  "replace"}``), ``DELETE /admin/v1/dno/{tn}``.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import unquote

import orjson

__all__ = ["AdminAPI", "openapi_paths"]

PREFIX = "/admin/v1/"
_JSON = ("Content-Type", "application/json")
Reply = tuple[int, bytes, tuple[tuple[str, str], ...]]


class _Error(Exception):
    def __init__(self, status: int, message: str, problems: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems


def _reply(status: int, doc: Any, rid: str, *extra: tuple[str, str]) -> Reply:
    return status, orjson.dumps(doc), (_JSON, ("X-RequestID", rid)) + extra


class AdminAPI:
    """``handle(method, path, headers, body, rid)`` → an awaitable :data:`Reply` (or a reply).

    ``store`` is an :class:`~stirshaken.serve.inventory.store.InventoryStore`, ``refresh`` applies
    pending changes to this worker's index (the watcher's ``check``), ``live`` is the worker's
    :class:`~stirshaken.serve.inventory.index.LiveInventory`."""

    def __init__(self, store: Any, token: str, live: Any, refresh: Callable[[], Any]):
        self.store = store
        self.token = token.encode()
        self.live = live
        self.refresh = refresh

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes, rid: str) -> Reply | Awaitable[Reply]:
        auth = headers.get("authorization") or ""
        if not (auth[:7].lower() == "bearer " and hmac.compare_digest(auth[7:].strip().encode(), self.token)):
            return _reply(401, {"error": {"status": 401, "message": "a valid admin bearer token is required"}}, rid,
                          ("WWW-Authenticate", 'Bearer realm="stirshaken-admin"'))
        if not path.startswith(PREFIX):
            return _reply(404, {"error": {"status": 404, "message": f"no admin resource {path[:100]}"}}, rid)
        parts = [unquote(p) for p in path[len(PREFIX):].split("/")]
        doc: Any = None
        if body:
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                return _reply(400, {"error": {"status": 400, "message": f"body is not JSON: {exc}"[:200]}}, rid)
        return self._run(method, parts, doc, rid)

    async def _run(self, method: str, parts: list[str], doc: Any, rid: str) -> Reply:
        try:
            status, out = await asyncio.to_thread(self._dispatch, method, parts, doc)
        except _Error as exc:
            err: dict[str, Any] = {"status": exc.status, "message": exc.message}
            if exc.problems is not None:
                err["problems"] = exc.problems
            return _reply(exc.status, {"error": err}, rid)
        return _reply(status, out, rid)

    # --- resources (run in a thread) --------------------------------------------------------------

    def _dispatch(self, method: str, parts: list[str], doc: Any) -> tuple[int, Any]:
        from stirshaken.serve.inventory.store import ImportProblems, InventoryError

        try:
            return self._route(method, parts, doc)
        except ImportProblems as exc:
            raise _Error(400, str(exc).split(":")[0], [{"line": n, "message": m} for n, m in exc.problems]) from None
        except InventoryError as exc:
            text = str(exc)
            raise _Error(404 if text.startswith("no customer") or "is not in the inventory" in text or "is not on a DNO" in text else 400,
                         text) from None

    def _changed(self, version: int) -> dict[str, Any]:
        self.refresh()
        return {"version": version, "worker_version": self.live.index.version}

    def _route(self, method: str, parts: list[str], doc: Any) -> tuple[int, Any]:
        st = self.store
        res, arg = parts[0], "/".join(parts[1:])
        body = doc if isinstance(doc, dict) else {}
        if res == "inventory" and not arg and method == "GET":
            return 200, {"database": st.counts(), "worker": {"pid": os.getpid(), **self.live.stats()}}
        if res == "tns":
            if not arg:
                if method != "POST":
                    raise _Error(405, "use POST to import, or /admin/v1/tns/{tn}")
                text = body.get("csv")
                if not isinstance(text, str):
                    raise _Error(400, "'csv' (the rows 'tn,customer') is required")
                r = st.import_tns(text.splitlines(), replace=body.get("replace") is True, create_customers=body.get("create_customers") is True)
                return 200, {"imported": r.rows, "tns": r.tns, "ranges": r.ranges, **self._changed(r.version)}
            if method == "GET":
                return 200, st.lookup(arg)
            if method == "PUT":
                cust = body.get("customer")
                if not isinstance(cust, str) or not cust:
                    raise _Error(400, "'customer' is required")
                return 200, self._changed(st.add_tn(arg, cust))
            if method == "DELETE":
                return 200, self._changed(st.remove_tn(arg))
            raise _Error(405, f"{method} not allowed on a TN")
        if res == "customers":
            if not arg and method == "GET":
                return 200, {"customers": st.customers()}
            if arg and method == "PUT":
                def strings(key: str) -> list[str]:
                    v = body.get(key, [])
                    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                        raise _Error(400, f"'{key}' must be a list of strings")
                    return v

                st.put_customer(arg, tenant=body.get("tenant") or None, own=body.get("own", "A"), other=body.get("other", "B"),
                                sources=strings("sources"), headers=strings("headers"), credentials=strings("credentials"),
                                tenants=strings("tenants"))
                return 200, self._changed(st.version())
            if arg and method == "DELETE":
                st.remove_customer(arg)
                return 200, self._changed(st.version())
            raise _Error(405, f"{method} not allowed here")
        if res == "dno":
            if not arg and method == "GET":
                return 200, {"lists": st.dno_lists()}
            if not arg and method == "POST":
                tns = body.get("tns")
                source = body.get("source")
                if not isinstance(tns, list) or not all(isinstance(t, str) for t in tns) or not isinstance(source, str):
                    raise _Error(400, "'source' (string) and 'tns' (list of strings) are required")
                r = st.import_dno([t + "\n" for t in tns], source=source, listed=body.get("listed"), replace=body.get("replace") is True)
                return 200, {"imported": r.rows, **self._changed(r.version)}
            if arg and method == "GET":
                return 200, st.lookup(arg)
            if arg and method == "DELETE":
                return 200, self._changed(st.remove_dno(arg))
            raise _Error(405, f"{method} not allowed here")
        raise _Error(404, f"no admin resource {'/'.join(parts)[:100]}")


def openapi_paths() -> tuple[dict[str, Any], dict[str, Any]]:
    """``(paths, schemas)`` of the admin API for the OpenAPI document."""
    sec = [{"adminBearer": []}]
    err = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AdminError"}}}}
    ok = {"description": "done; `version` is the inventory version after the change", "content": {"application/json": {"schema": {"type": "object"}}}}
    tn_param = {"name": "tn", "in": "path", "required": True, "schema": {"type": "string"}, "description": "canonical TN, or a range start-end"}
    std = {"200": ok, "400": err, "401": err, "404": err}
    tag = ["inventory admin"]
    paths = {
        "/admin/v1/inventory": {"get": {"tags": tag, "security": sec, "summary": "Database counts and this worker's index", "responses": std}},
        "/admin/v1/tns": {"post": {"tags": tag, "security": sec, "summary": "Bulk import of tn,customer rows (one transaction)",
                                   "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TnImport"}}}},
                                   "responses": std}},
        "/admin/v1/tns/{tn}": {
            "parameters": [tn_param],
            "get": {"tags": tag, "security": sec, "summary": "Holder and DNO listing of a TN", "responses": std},
            "put": {"tags": tag, "security": sec, "summary": "Assign a TN or range to a customer",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["customer"], "properties": {"customer": {"type": "string"}}}}}},
                    "responses": std},
            "delete": {"tags": tag, "security": sec, "summary": "Remove a TN or range", "responses": std}},
        "/admin/v1/customers": {"get": {"tags": tag, "security": sec, "summary": "Customers with recognizers and TN counts", "responses": std}},
        "/admin/v1/customers/{name}": {
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "put": {"tags": tag, "security": sec, "summary": "Create or replace a customer",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Customer"}}}},
                    "responses": std},
            "delete": {"tags": tag, "security": sec, "summary": "Remove a customer holding no TN", "responses": std}},
        "/admin/v1/dno": {
            "get": {"tags": tag, "security": sec, "summary": "DNO sources with counts and dates", "responses": std},
            "post": {"tags": tag, "security": sec, "summary": "Add DNO numbers of a source (one transaction)",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DnoImport"}}}},
                     "responses": std}},
        "/admin/v1/dno/{tn}": {"parameters": [tn_param],
                               "get": {"tags": tag, "security": sec, "summary": "DNO listing of a TN", "responses": std},
                               "delete": {"tags": tag, "security": sec, "summary": "Remove a TN from the DNO lists", "responses": std}},
    }
    schemas = {
        "AdminError": {"type": "object", "properties": {"error": {"type": "object", "required": ["status", "message"], "properties": {
            "status": {"type": "integer"}, "message": {"type": "string"},
            "problems": {"type": "array", "items": {"type": "object", "properties": {"line": {"type": "integer"}, "message": {"type": "string"}}}}}}}},
        "TnImport": {"type": "object", "required": ["csv"], "properties": {
            "csv": {"type": "string", "description": "rows 'tn,customer' (tn: a TN or a range start-end); optional header line"},
            "replace": {"type": "boolean", "default": False, "description": "the rows become the whole TN inventory"},
            "create_customers": {"type": "boolean", "default": False}}},
        "Customer": {"type": "object", "properties": {
            "tenant": {"type": "string", "description": "only recognised for calls signed for this tenant"},
            "own": {"type": "string", "enum": ["A", "B", "C"], "default": "A"}, "other": {"type": "string", "enum": ["A", "B", "C"], "default": "B"},
            "sources": {"type": "array", "items": {"type": "string"}, "description": "SIP source IP addresses/networks"},
            "headers": {"type": "array", "items": {"type": "string"}, "description": "values of the customer (trunk) header"},
            "credentials": {"type": "array", "items": {"type": "string"}, "description": "REST bearer tokens (stored hashed)"},
            "tenants": {"type": "array", "items": {"type": "string"}, "description": "tenants whose every call is this customer's"}}},
        "DnoImport": {"type": "object", "required": ["source", "tns"], "properties": {
            "source": {"type": "string"}, "listed": {"type": "string", "format": "date"}, "tns": {"type": "array", "items": {"type": "string"}},
            "replace": {"type": "boolean", "default": False, "description": "drop the earlier entries of this source"}}},
    }
    return paths, schemas
