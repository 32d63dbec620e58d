"""Persistent state of the STI-PA, STI-CA and STI-CR (SQLAlchemy 2 Core).

One schema holds the tables of all three services (each prefixed ``pa_``, ``ca_``, ``cr_``) so a
testbed can share one embedded SQLite file while a deployment can give each service its own
PostgreSQL database (``postgresql+psycopg://user@host/db``).  The volume is low (one row per
account, order, token or certificate), so the services call these synchronous methods directly
from their handlers.

Invariants the database enforces rather than the code:

* a token ``jti`` is used at most once (primary key of ``ca_used_jti``; RFC 9447 §3 / RFC 9448
  §5 replay protection);
* an order is finalized at most once, and a certificate is issued only once it is recorded:
  :meth:`Database.ca_record_certificate` is one transaction holding the conditional
  ``UPDATE ca_orders SET status='valid' ... WHERE id=? AND status='ready'`` (its row count
  decides which of several concurrent finalize requests issues, RFC 8555 §7.4) and the INSERT of
  the certificate (serial, PEM chain, order); ``ca_certs.order_id`` is unique as a second guard.
  Until that commit no certificate is served or published; if it fails, nothing changed and the
  order is still ``ready``.  No intermediate state is committed, so a CA that dies during
  finalize leaves the order ``ready`` (or ``valid`` with its certificate recorded).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass
from typing import Any, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from stirshaken.core.certificates import utcnow

metadata = sa.MetaData()


def _tz(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite returns naive datetimes: every stored time is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def new_id() -> str:
    """An unguessable URL-safe identifier for accounts, orders, authorizations and certificates."""
    return secrets.token_urlsafe(12)


TS = sa.DateTime(timezone=True)

# --- STI-PA ------------------------------------------------------------------------------------
pa_accounts = sa.Table(
    "pa_accounts",
    metadata,
    sa.Column("username", sa.String(128), primary_key=True),
    sa.Column("ocn", sa.String(32), nullable=True),  # SPC/OCN the account may request tokens for
    sa.Column("password_hash", sa.String(256), nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False, default=False),
    sa.Column("may_request_ca", sa.Boolean, nullable=False, default=False),
    sa.Column("created", TS, nullable=False),
)
pa_sessions = sa.Table(
    "pa_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(128), nullable=False),
    sa.Column("expires", TS, nullable=False),
)
pa_tokens = sa.Table(
    "pa_tokens",
    metadata,
    sa.Column("jti", sa.String(64), primary_key=True),
    sa.Column("ocn", sa.String(32), nullable=False),
    sa.Column("fingerprint", sa.String(128), nullable=False),
    sa.Column("tkvalue", sa.Text, nullable=False),
    sa.Column("expires", TS, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
    sa.Column("created", TS, nullable=False),
)
pa_revoked_certs = sa.Table(
    "pa_revoked_certs",
    metadata,
    sa.Column("serial", sa.String(64), primary_key=True),  # lower-case hex
    sa.Column("issuer", sa.Text, nullable=True),
    sa.Column("reason", sa.String(32), nullable=True),
    sa.Column("revoked_at", TS, nullable=False),
)
pa_trusted_cas = sa.Table(
    "pa_trusted_cas",
    metadata,
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("pem", sa.Text, nullable=False),
    sa.Column("added", TS, nullable=False),
)
kv = sa.Table(
    "kv_state",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

# --- STI-CA (ACME) ----------------------------------------------------------------------------
ca_accounts = sa.Table(
    "ca_accounts",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("thumbprint", sa.String(64), nullable=False, unique=True),
    sa.Column("jwk", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("contact", sa.JSON, nullable=False),
    sa.Column("created", TS, nullable=False),
)
ca_orders = sa.Table(
    "ca_orders",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("account_id", sa.String(32), sa.ForeignKey("ca_accounts.id"), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("identifier", sa.Text, nullable=False),  # the value as the client sent it
    sa.Column("tnauthlist", sa.LargeBinary, nullable=False),  # its DER
    sa.Column("expires", TS, nullable=False),
    sa.Column("not_before", TS, nullable=True),
    sa.Column("not_after", TS, nullable=True),
    sa.Column("cert_id", sa.String(32), nullable=True),
    sa.Column("error", sa.JSON, nullable=True),
    sa.Column("created", TS, nullable=False),
)
ca_authzs = sa.Table(
    "ca_authzs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("order_id", sa.String(32), sa.ForeignKey("ca_orders.id"), nullable=False, index=True),
    sa.Column("account_id", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("expires", TS, nullable=False),
    sa.Column("challenge_token", sa.String(64), nullable=False),
    sa.Column("challenge_status", sa.String(16), nullable=False),
    sa.Column("validated", TS, nullable=True),
    sa.Column("error", sa.JSON, nullable=True),
)
ca_used_jti = sa.Table(
    "ca_used_jti",
    metadata,
    sa.Column("issuer", sa.String(256), primary_key=True),
    sa.Column("jti", sa.String(256), primary_key=True),
    sa.Column("expires", TS, nullable=False),
    sa.Column("account_id", sa.String(32), nullable=False),
)
ca_certs = sa.Table(
    "ca_certs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("serial", sa.String(64), nullable=False, unique=True),
    sa.Column("order_id", sa.String(32), nullable=False, unique=True),  # one certificate per order
    sa.Column("account_id", sa.String(32), nullable=False),
    sa.Column("chain_pem", sa.Text, nullable=False),
    sa.Column("not_after", TS, nullable=False),
    sa.Column("cr_url", sa.Text, nullable=True),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
    sa.Column("revoked_at", TS, nullable=True),
    sa.Column("created", TS, nullable=False),
)

ca_eab_keys = sa.Table(  # RFC 8555 §7.3.4 external account binding keys (stirshaken ca eab-create)
    "ca_eab_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("hmac_key", sa.String(128), nullable=False),  # base64url; a MAC key cannot be kept hashed
    sa.Column("spc", sa.String(32), nullable=True),  # the SPC the bound account may order for
    sa.Column("pa_account", sa.String(128), nullable=True),  # the STI-PA account it belongs to
    sa.Column("created", TS, nullable=False),
    sa.Column("account_id", sa.String(32), nullable=True, unique=True),  # set once, at newAccount
    sa.Column("used_at", TS, nullable=True),
)

# --- STI-CR -----------------------------------------------------------------------------------
cr_chains = sa.Table(
    "cr_chains",
    metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("chain_pem", sa.Text, nullable=False),
    sa.Column("owner", sa.String(128), nullable=True),
    sa.Column("updated", TS, nullable=False),
)


@dataclass(frozen=True)
class Row:
    """A plain snapshot of a database row (attribute access, times in UTC)."""

    data: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            value = self.data[name]
        except KeyError:
            raise AttributeError(name) from None
        return _tz(value) if isinstance(value, dt.datetime) else value


def _row(r: Any) -> Row | None:
    return None if r is None else Row(dict(r._mapping))


class NameTakenError(Exception):
    """An STI-CR name that belongs to another uploader."""


def sqlite_url(path: str) -> str:
    return f"sqlite:///{path}"


class DatabaseError(Exception):
    """A database cannot be opened: one line naming it (password hidden) and why, in words
    (``cannot open the database sqlite:////x/y.db: unable to open database file``)."""


def shown_url(url: str) -> str:
    """``url`` with its passwords hidden (``***``), as it may appear in an error or a log line:
    the one before ``@`` and any query parameter naming one (``password``, ``sslpassword``: libpq
    takes both there)."""
    try:
        u = sa.engine.make_url(url)
        secret = {k: "***" for k in u.query if "password" in k.lower()}
        if secret:
            u = u.update_query_dict(secret)
        return u.render_as_string(hide_password=True).replace("=%2A%2A%2A", "=***")
    except Exception:  # noqa: BLE001 - not a URL at all: shown as given, it holds no password part
        return url


def database_error(url: str, exc: Exception) -> DatabaseError:
    """The :class:`DatabaseError` for SQLAlchemy's ``exc`` raised while opening ``url``: the
    driver's own first line (its ``orig``), not SQLAlchemy's wrapper with its background link."""
    if isinstance(exc, sa.exc.NoSuchModuleError):
        dialect = url.split(":", 1)[0]
        why = f"unknown database kind {dialect!r} (sqlite:///FILE or postgresql+psycopg://USER@HOST/DB)"
    elif isinstance(exc, sa.exc.ArgumentError):
        why = "not a database URL (sqlite:///FILE or postgresql+psycopg://USER@HOST/DB)"
    else:
        text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        why = " ".join(text[0].split()) if text else type(exc).__name__
    return DatabaseError(f"cannot open the database {shown_url(url)}: {why}")


def _create_private(url: str) -> None:
    """Create the file of a SQLite ``url`` readable by its owner only (0600) if it does not exist
    yet: it may hold password hashes, tokens or EAB keys, and SQLite would create it with the
    process umask (usually 0644).  Its ``-wal``, ``-shm`` and ``-journal`` files take the same
    mode (SQLite copies the database file's permissions to them)."""
    try:
        path = sa.engine.make_url(url).database
    except sa.exc.ArgumentError:
        return
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:  # e.g. its directory is missing: SQLite reports that, in its own words
        pass


def make_engine(url: str, *, connect_timeout: float | None = None) -> Engine:
    """The project's one way to open a database (``url``: any SQLAlchemy URL).  SQLite files are
    created 0600 and shared between threads and processes: WAL journal, a 30 s busy timeout,
    foreign keys on; server databases (PostgreSQL) get ``pool_pre_ping`` so a connection lost in
    an outage is replaced instead of failing the next request, and ``connect_timeout`` (seconds,
    when given) bounds each connection attempt.  A URL SQLAlchemy cannot use raises
    :class:`DatabaseError`."""
    kwargs: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        _create_private(url)
    else:
        kwargs["pool_pre_ping"] = True
        if connect_timeout is not None:
            kwargs["connect_args"] = {"connect_timeout": max(1, int(connect_timeout))}
    try:
        engine = sa.create_engine(url, **kwargs)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise database_error(url, exc) from None
    if url.startswith("sqlite"):

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


class Database:
    """The state store.  ``url`` is any SQLAlchemy URL; SQLite files get WAL and a busy timeout."""

    def __init__(self, url: str, *, create: bool = True):
        """Open (and with ``create`` make the tables of) the database at ``url``; raises
        :class:`DatabaseError` when it cannot be opened."""
        self.url = url
        self.engine: Engine = make_engine(url)
        if create:
            try:
                metadata.create_all(self.engine)
            except sa.exc.SQLAlchemyError as exc:
                self.engine.dispose()
                raise database_error(url, exc) from None

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def close(self) -> None:
        self.engine.dispose()

    def begin(self) -> Any:
        return self.engine.begin()

    def _one(self, stmt: Any) -> Row | None:
        with self.engine.connect() as c:
            return _row(c.execute(stmt).first())

    def _all(self, stmt: Any) -> list[Row]:
        with self.engine.connect() as c:
            return [Row(dict(r._mapping)) for r in c.execute(stmt)]

    # --- counters (CRL number, CA-list sequence) ------------------------------------------
    def next_counter(self, key: str) -> int:
        """Atomically increment and return a named counter (starts at 1)."""
        with self.engine.begin() as c:
            n = c.execute(sa.update(kv).where(kv.c.key == key).values(value=kv.c.value + 1)).rowcount
            if n == 0:
                try:
                    with c.begin_nested():
                        c.execute(sa.insert(kv).values(key=key, value=1))
                    return 1
                except IntegrityError:
                    c.execute(sa.update(kv).where(kv.c.key == key).values(value=kv.c.value + 1))
            return int(c.execute(sa.select(kv.c.value).where(kv.c.key == key)).scalar_one())

    # --- STI-PA -----------------------------------------------------------------------------
    def pa_put_account(self, username: str, password_hash: str, *, ocn: str | None, admin: bool = False, may_request_ca: bool = False) -> None:
        with self.engine.begin() as c:
            c.execute(sa.delete(pa_accounts).where(pa_accounts.c.username == username))
            c.execute(
                sa.insert(pa_accounts).values(
                    username=username, ocn=ocn, password_hash=password_hash, admin=admin,
                    may_request_ca=may_request_ca, created=utcnow(),
                )
            )

    def pa_account(self, username: str) -> Row | None:
        return self._one(sa.select(pa_accounts).where(pa_accounts.c.username == username))

    def pa_add_session(self, token_hash: str, username: str, expires: dt.datetime) -> None:
        with self.engine.begin() as c:
            c.execute(sa.delete(pa_sessions).where(pa_sessions.c.expires < utcnow()))
            c.execute(sa.insert(pa_sessions).values(token_hash=token_hash, username=username, expires=expires))

    def pa_end_session(self, token_hash: str) -> None:
        """Forget one STI-PA session (logout)."""
        with self.engine.begin() as c:
            c.execute(sa.delete(pa_sessions).where(pa_sessions.c.token_hash == token_hash))

    def pa_session(self, token_hash: str) -> Row | None:
        return self._one(sa.select(pa_sessions).where(pa_sessions.c.token_hash == token_hash))

    def pa_add_token(self, jti: str, ocn: str, fingerprint: str, tkvalue: str, expires: dt.datetime) -> None:
        with self.engine.begin() as c:
            c.execute(
                sa.insert(pa_tokens).values(
                    jti=jti, ocn=ocn, fingerprint=fingerprint, tkvalue=tkvalue, expires=expires,
                    revoked=False, created=utcnow(),
                )
            )

    def pa_token(self, jti: str) -> Row | None:
        return self._one(sa.select(pa_tokens).where(pa_tokens.c.jti == jti))

    def pa_revoke_token(self, jti: str) -> bool:
        with self.engine.begin() as c:
            return c.execute(sa.update(pa_tokens).where(pa_tokens.c.jti == jti).values(revoked=True)).rowcount == 1

    def pa_revoked_tokens(self) -> list[str]:
        rows = self._all(
            sa.select(pa_tokens.c.jti).where(pa_tokens.c.revoked.is_(True), pa_tokens.c.expires > utcnow())
        )
        return [r.jti for r in rows]

    def pa_revoke_cert(self, serial: int, *, issuer: str | None, reason: str | None) -> bool:
        """Record a revocation; False when the serial was already revoked."""
        try:
            with self.engine.begin() as c:
                c.execute(
                    sa.insert(pa_revoked_certs).values(
                        serial=format(serial, "x"), issuer=issuer, reason=reason, revoked_at=utcnow()
                    )
                )
            return True
        except IntegrityError:
            return False

    def pa_revoked_certs(self) -> list[tuple[int, dt.datetime, str | None]]:
        rows = self._all(sa.select(pa_revoked_certs).order_by(pa_revoked_certs.c.revoked_at))
        return [(int(r.serial, 16), r.revoked_at, r.reason) for r in rows]

    def pa_add_trusted_ca(self, fingerprint: str, pem_text: str) -> None:
        try:
            with self.engine.begin() as c:
                c.execute(sa.insert(pa_trusted_cas).values(fingerprint=fingerprint, pem=pem_text, added=utcnow()))
        except IntegrityError:
            pass

    def pa_remove_trusted_ca(self, fingerprint: str) -> bool:
        with self.engine.begin() as c:
            return c.execute(sa.delete(pa_trusted_cas).where(pa_trusted_cas.c.fingerprint == fingerprint)).rowcount == 1

    def pa_trusted_cas(self) -> list[str]:
        return [r.pem for r in self._all(sa.select(pa_trusted_cas).order_by(pa_trusted_cas.c.added))]

    # --- STI-CA: accounts -------------------------------------------------------------------
    def ca_account_by_thumbprint(self, thumbprint: str) -> Row | None:
        return self._one(sa.select(ca_accounts).where(ca_accounts.c.thumbprint == thumbprint))

    def ca_account(self, account_id: str) -> Row | None:
        return self._one(sa.select(ca_accounts).where(ca_accounts.c.id == account_id))

    def ca_create_account(self, thumbprint: str, jwk: Mapping[str, Any], contact: list[str]) -> tuple[Row, bool]:
        """Create the account for a key, or return the existing one; the flag says "created"."""
        account_id = new_id()
        try:
            with self.engine.begin() as c:
                c.execute(
                    sa.insert(ca_accounts).values(
                        id=account_id, thumbprint=thumbprint, jwk=dict(jwk), status="valid",
                        contact=list(contact), created=utcnow(),
                    )
                )
            created = True
        except IntegrityError:
            created = False
        row = self.ca_account_by_thumbprint(thumbprint)
        assert row is not None
        return row, created

    # --- STI-CA: external account binding keys (RFC 8555 §7.3.4) -----------------------------
    def ca_eab_create(self, kid: str, hmac_key: str, *, spc: str | None, pa_account: str | None) -> None:
        with self.engine.begin() as c:
            c.execute(sa.insert(ca_eab_keys).values(kid=kid, hmac_key=hmac_key, spc=spc, pa_account=pa_account, created=utcnow()))

    def ca_eab_key(self, kid: str) -> Row | None:
        return self._one(sa.select(ca_eab_keys).where(ca_eab_keys.c.kid == kid))

    def ca_eab_of_account(self, account_id: str) -> Row | None:
        return self._one(sa.select(ca_eab_keys).where(ca_eab_keys.c.account_id == account_id))

    def ca_eab_bind(self, kid: str, account_id: str) -> bool:
        """Bind an unused key identifier to ``account_id`` (conditional UPDATE: True for the one
        caller that bound it)."""
        with self.engine.begin() as c:
            res = c.execute(
                sa.update(ca_eab_keys).where(ca_eab_keys.c.kid == kid, ca_eab_keys.c.account_id.is_(None))
                .values(account_id=account_id, used_at=utcnow())
            )
        return res.rowcount == 1

    def ca_update_account(self, account_id: str, **values: Any) -> None:
        with self.engine.begin() as c:
            c.execute(sa.update(ca_accounts).where(ca_accounts.c.id == account_id).values(**values))

    # --- STI-CA: orders and authorizations ----------------------------------------------------
    def ca_create_order(
        self,
        account_id: str,
        identifier: str,
        tnauthlist_der: bytes,
        *,
        expires: dt.datetime,
        not_before: dt.datetime | None,
        not_after: dt.datetime | None,
        challenge_token: str,
    ) -> tuple[Row, Row]:
        order_id, authz_id = new_id(), new_id()
        with self.engine.begin() as c:
            c.execute(
                sa.insert(ca_orders).values(
                    id=order_id, account_id=account_id, status="pending", identifier=identifier,
                    tnauthlist=tnauthlist_der, expires=expires, not_before=not_before, not_after=not_after,
                    created=utcnow(),
                )
            )
            c.execute(
                sa.insert(ca_authzs).values(
                    id=authz_id, order_id=order_id, account_id=account_id, status="pending", expires=expires,
                    challenge_token=challenge_token, challenge_status="pending",
                )
            )
        order, authz = self.ca_order(order_id), self.ca_authz(authz_id)
        assert order is not None and authz is not None
        return order, authz

    def ca_order(self, order_id: str) -> Row | None:
        return self._one(sa.select(ca_orders).where(ca_orders.c.id == order_id))

    def ca_authz(self, authz_id: str) -> Row | None:
        return self._one(sa.select(ca_authzs).where(ca_authzs.c.id == authz_id))

    def ca_authzs_of(self, order_id: str) -> list[Row]:
        return self._all(sa.select(ca_authzs).where(ca_authzs.c.order_id == order_id).order_by(ca_authzs.c.id))

    def ca_orders_of(self, account_id: str) -> list[Row]:
        return self._all(sa.select(ca_orders).where(ca_orders.c.account_id == account_id).order_by(ca_orders.c.created))

    def ca_authz_result(self, authz_id: str, *, valid: bool, error: Mapping[str, Any] | None) -> bool:
        """Move a pending authorization (and its challenge) to valid or invalid; updates the order.

        Returns False when the authorization was no longer pending (a concurrent answer won).
        """
        now = utcnow()
        status = "valid" if valid else "invalid"
        with self.engine.begin() as c:
            n = c.execute(
                sa.update(ca_authzs)
                .where(ca_authzs.c.id == authz_id, ca_authzs.c.status == "pending")
                .values(status=status, challenge_status=status, validated=now, error=dict(error) if error else None)
            ).rowcount
            if n != 1:
                return False
            order_id = c.execute(sa.select(ca_authzs.c.order_id).where(ca_authzs.c.id == authz_id)).scalar_one()
            statuses = [s for (s,) in c.execute(sa.select(ca_authzs.c.status).where(ca_authzs.c.order_id == order_id))]
            if not valid:
                c.execute(
                    sa.update(ca_orders)
                    .where(ca_orders.c.id == order_id, ca_orders.c.status == "pending")
                    .values(status="invalid", error=dict(error) if error else None)
                )
            elif all(s == "valid" for s in statuses):
                c.execute(
                    sa.update(ca_orders).where(ca_orders.c.id == order_id, ca_orders.c.status == "pending").values(status="ready")
                )
        return True

    def ca_use_jti(self, issuer: str, jti: str, expires: dt.datetime, account_id: str) -> bool:
        """Record a token's jti; False when it was used before (replay, RFC 9447 §3)."""
        try:
            with self.engine.begin() as c:
                c.execute(sa.insert(ca_used_jti).values(issuer=issuer, jti=jti, expires=expires, account_id=account_id))
            return True
        except IntegrityError:
            return False

    def ca_record_certificate(
        self, order_id: str, account_id: str, serial: int, chain_pem: str, not_after: dt.datetime
    ) -> Row | None:
        """Record an issued certificate and move its order ``ready`` -> ``valid``, in ONE
        transaction (RFC 8555 §7.4): the certificate row (serial as lower-case hex, PEM chain,
        order and account) and the order's state and ``cert_id`` commit together or not at all.

        Returns the certificate row, or None when the order was not ``ready`` (another finalize
        recorded first: the conditional UPDATE matched no row, nothing was written).  Raises the
        database's error (SQLAlchemy ``OperationalError``, ``IntegrityError``, ...) when the
        transaction cannot commit; then nothing was recorded and the order is unchanged.  Only
        after this returns may the certificate be served or published."""
        cert_id = new_id()
        with self.engine.begin() as c:
            won = c.execute(
                sa.update(ca_orders)
                .where(ca_orders.c.id == order_id, ca_orders.c.status == "ready")
                .values(status="valid", cert_id=cert_id, error=None)
            ).rowcount
            if won != 1:
                return None  # nothing written: the (empty) transaction commits
            c.execute(
                sa.insert(ca_certs).values(
                    id=cert_id, serial=format(serial, "x"), order_id=order_id, account_id=account_id,
                    chain_pem=chain_pem, not_after=not_after, cr_url=None, revoked=False, created=utcnow(),
                )
            )
        row = self.ca_certificate(cert_id)
        assert row is not None
        return row

    def ca_set_cr_url(self, cert_id: str, cr_url: str) -> None:
        """Note where the STI-CR publishes a recorded certificate (after it was published)."""
        with self.engine.begin() as c:
            c.execute(sa.update(ca_certs).where(ca_certs.c.id == cert_id).values(cr_url=cr_url))

    def ca_fail_order(self, order_id: str, error: Mapping[str, Any]) -> bool:
        """``ready`` -> ``invalid`` with ``error`` (an RFC 8555 §6.7 problem document); False when
        the order was not ready."""
        with self.engine.begin() as c:
            return c.execute(
                sa.update(ca_orders)
                .where(ca_orders.c.id == order_id, ca_orders.c.status == "ready")
                .values(status="invalid", error=dict(error))
            ).rowcount == 1

    def ca_recover_orders(self) -> tuple[list[str], list[str]]:
        """Finish the orders left in ``processing`` (by an earlier version of the STI-CA, which
        committed that state before issuing, or by hand): an order whose certificate is recorded
        becomes ``valid`` with it; any other goes back to ``ready``, so its client finalizes
        again with the authorization it holds (its SPC token was spent on that authorization, and
        need not be presented again).  Each order moves in its own conditional UPDATE.  Returns
        the ids ``(completed, reset)``."""
        completed: list[str] = []
        reset: list[str] = []
        stuck = self._all(sa.select(ca_orders.c.id).where(ca_orders.c.status == "processing").order_by(ca_orders.c.created))
        for order_id in [r.id for r in stuck]:
            with self.engine.begin() as c:
                cert_id = c.execute(sa.select(ca_certs.c.id).where(ca_certs.c.order_id == order_id)).scalar()
                values: dict[str, Any] = {"status": "valid", "cert_id": cert_id} if cert_id else {"status": "ready", "cert_id": None}
                n = c.execute(
                    sa.update(ca_orders)
                    .where(ca_orders.c.id == order_id, ca_orders.c.status == "processing")
                    .values(error=None, **values)
                ).rowcount
            if n == 1:
                (completed if cert_id else reset).append(order_id)
        return completed, reset

    def ca_certificate(self, cert_id: str) -> Row | None:
        return self._one(sa.select(ca_certs).where(ca_certs.c.id == cert_id))

    def ca_certificate_by_serial(self, serial: int) -> Row | None:
        return self._one(sa.select(ca_certs).where(ca_certs.c.serial == format(serial, "x")))

    def ca_certificates_for_order(self, order_id: str) -> list[Row]:
        return self._all(sa.select(ca_certs).where(ca_certs.c.order_id == order_id))

    def ca_count_certificates(self) -> int:
        with self.engine.connect() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(ca_certs)).scalar_one())

    def ca_mark_revoked(self, serial: int) -> bool:
        with self.engine.begin() as c:
            return (
                c.execute(
                    sa.update(ca_certs)
                    .where(ca_certs.c.serial == format(serial, "x"), ca_certs.c.revoked.is_(False))
                    .values(revoked=True, revoked_at=utcnow())
                ).rowcount
                == 1
            )

    # --- STI-CR -----------------------------------------------------------------------------
    def cr_put(self, name: str, chain_pem: str, owner: str | None) -> bool:
        """Store ``chain_pem`` under ``name`` for ``owner`` in one atomic step; True when the name
        is new.  The UPDATE only matches a row that is ``owner``'s (or has no owner), and the INSERT
        relies on the primary key, so two uploaders racing for one name cannot both win, and none
        can take over another's name (check and write are never two steps).  Raises
        :class:`NameTakenError` when the name belongs to another owner.  ``owner`` None (the
        CA's own publication in one process) writes unconditionally."""
        cond = cr_chains.c.name == name
        if owner is not None:
            cond = sa.and_(cond, sa.or_(cr_chains.c.owner == owner, cr_chains.c.owner.is_(None)))
        with self.engine.begin() as c:
            if c.execute(sa.update(cr_chains).where(cond).values(chain_pem=chain_pem, owner=owner, updated=utcnow())).rowcount:
                return False
        try:
            with self.engine.begin() as c:
                c.execute(sa.insert(cr_chains).values(name=name, chain_pem=chain_pem, owner=owner, updated=utcnow()))
        except IntegrityError:
            raise NameTakenError(name) from None
        return True

    def cr_get(self, name: str) -> Row | None:
        return self._one(sa.select(cr_chains).where(cr_chains.c.name == name))

    def cr_names(self) -> list[str]:
        return [r.name for r in self._all(sa.select(cr_chains.c.name).order_by(cr_chains.c.name))]


__all__ = ["Database", "NameTakenError", "Row", "metadata", "new_id", "sqlite_url", "utcnow"]
