"""What a worker of ``stirshaken serve`` runs for ``[inventory]``: the database store, the live
index and its watcher thread, the admin API and the verification-side DNO check.

Only the server process imports this module (it loads SQLAlchemy through
:mod:`stirshaken.serve.inventory.store`); the signing service receives the
:class:`~stirshaken.serve.inventory.index.LiveInventory` alone.
"""

from __future__ import annotations

import logging
import textwrap
from typing import Any

from stirshaken.serve.config import ConfigError, InventoryConfig
from stirshaken.serve.inventory.index import LiveInventory

log = logging.getLogger("stirshaken.serve.inventory")

__all__ = ["InventoryRuntime", "check_database"]

DNO_HEADER = "X-Caller-DNO"


def _one_line(exc: BaseException) -> str:
    """A driver error in one line, without SQLAlchemy's background link."""
    return textwrap.shorten(str(getattr(exc, "orig", None) or exc), 200, placeholder=" ...")


def _open(cfg: InventoryConfig) -> Any:
    """The :class:`~stirshaken.serve.inventory.store.InventoryStore` of ``cfg`` (its tables created
    when missing), or :class:`ConfigError` in one line."""
    from stirshaken.pki.store import DatabaseError
    from stirshaken.serve.inventory.store import InventoryStore

    try:
        return InventoryStore(cfg.url)
    except DatabaseError as exc:  # "cannot open the database URL: why"
        raise ConfigError(f"[inventory].database: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any driver error ends the start in one line
        raise ConfigError(f"[inventory].database: cannot open {cfg.database!r}: {_one_line(exc)}") from None


def check_database(cfg: InventoryConfig) -> None:
    """Open the inventory database (creating its tables when missing) and read its version;
    raises :class:`ConfigError` (``serve --check`` and the supervisor, once, before the workers)."""
    st = _open(cfg)
    try:
        st.version()
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"[inventory].database: cannot read {cfg.database!r}: {_one_line(exc)}") from None
    finally:
        st.close()


class InventoryRuntime:
    """Open the inventory database of ``cfg`` and load the index (:meth:`start`); raises
    :class:`ConfigError` when the database cannot be opened or read."""

    def __init__(self, cfg: InventoryConfig):
        from stirshaken.serve.inventory.store import InventoryWatcher

        self.cfg = cfg
        self.live = LiveInventory()
        self.store = _open(cfg)
        self.watcher = InventoryWatcher(self.store, self.live, cfg.poll_interval)
        self.admin: Any = None
        if cfg.admin_token:
            from stirshaken.serve.inventory.admin import AdminAPI

            self.admin = AdminAPI(self.store, cfg.admin_token, self.live, self.watcher.check)

    def start(self) -> None:
        try:
            self.watcher.start()
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"[inventory].database: cannot load the inventory: {_one_line(exc)}") from None

    def close(self) -> None:
        self.watcher.close()

    def dno_check(self, call: Any) -> tuple[int | None, tuple[str, str]] | None:
        """Verification: None, or ``(reject code or None, marking header)`` when the caller ID
        (P-Asserted-Identity, else From) is on a DNO list.  Counted and logged either way."""
        from stirshaken.vs.verifier import call_tn

        tn = call_tn(call.pai or call.from_)
        if not tn or not self.live.index.is_dno(tn):
            return None
        self.live.dno_verified += 1
        reject = self.cfg.dno_verification == "reject"
        log.info("inbound call with a Do-Not-Originate caller ID", extra={"tn": tn, "rejected": reject})
        return (self.cfg.dno_reject_code if reject else None), (DNO_HEADER, tn)
