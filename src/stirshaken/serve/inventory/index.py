"""The in-memory TN inventory and Do-Not-Originate index of one worker (stdlib only).

The attestation decision of an originating provider (ATIS-1000074 §5.2.3) needs, per call, two
questions answered in well under a microsecond against millions of numbers:

* *who holds this calling number?* — :meth:`InventoryIndex.holder`;
* *is it on a Do-Not-Originate list?* — :meth:`InventoryIndex.is_dno` (FCC 17-151, 47 CFR
  §64.1200(k)(1): a provider may block, and must not originate as legitimate, calls from numbers
  that are invalid, unallocated, unassigned or that their subscriber asked not to be used as
  caller ID).

Layout (memory per TN, measured by ``bench/bench_inventory.py``):

* TNs as integers :func:`tn_key` (``int("1" + digits)``: numbers of different lengths never
  collide, ``0123`` and ``123`` stay apart) in a sorted ``array('Q')`` (8 bytes) with the
  holding customer's id in a parallel ``array('I')`` (4 bytes): 12 bytes per TN, found through
  a direct table over the keys' high bits (:func:`_search`, at most 2 bytes per TN: the bucket
  of a key holds a few keys, bisected with :func:`bisect.bisect_left`, C code on the buffer),
  with every 32nd key in a list for dense buckets (1.25 bytes per TN);
* TN ranges (``start``–``end``, same length, not overlapping) as three parallel arrays, found
  with :func:`bisect.bisect_right` on the starts (kept as a list too: ranges are few);
* DNO numbers in a sorted ``array('Q')`` (8 bytes per number) with the same search, behind a
  byte map filter (16 bytes per number: 1.4 bytes per TN with 10,000,000 TNs and 1,000,000 DNO
  numbers; a bitmap took 2, but its bit arithmetic cost ≈ 700 instructions a lookup);
* changes since the arrays were built in small overlay dicts/sets (:meth:`with_changes`), so a
  live change costs a dict copy of the overlay, not a rebuild of the arrays; the owner of the
  index rebuilds them (full reload) when the overlay grows large.

Customers are recognised (:meth:`InventoryIndex.customer_for`) by the SIP source address (longest
matching network), a trunk/customer header value, the REST caller's bearer credential (stored as
its SHA-256) or the signing tenant.  An index is immutable once built: a worker swaps a new one in
(:class:`LiveInventory`), so a request never sees half a change.
"""

from __future__ import annotations

import hashlib
import ipaddress
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = [
    "ATTEST_LEVELS",
    "Customer",
    "InventoryIndex",
    "LiveInventory",
    "RECOGNIZER_KINDS",
    "credential_hash",
    "key_tn",
    "parse_range",
    "tn_key",
]

ATTEST_LEVELS = ("A", "B", "C")
#: how a customer is recognised: SIP source address/network, customer (trunk) header value, REST
#: bearer credential (SHA-256 hex), signing tenant name
RECOGNIZER_KINDS = ("source", "header", "credential", "tenant")


def tn_key(tn: str) -> int:
    """The integer key of a canonical TN (RFC 8224 §8.3 digits): ``int("1" + tn)``.

    Raises :class:`ValueError` when ``tn`` is not 1-18 ASCII digits."""
    if not (0 < len(tn) <= 18 and tn.isascii() and tn.isdigit()):
        raise ValueError(f"{tn!r} is not a telephone number (1-18 digits)")
    return int("1" + tn)


def key_tn(key: int) -> str:
    """The TN of a :func:`tn_key` key."""
    return str(key)[1:]


def parse_range(text: str) -> tuple[int, int]:
    """``"12155550000-12155559999"`` (both ends included, same length) as two keys.

    Raises :class:`ValueError` with the problem."""
    start, sep, end = text.partition("-")
    start, end = start.strip(), end.strip()
    if not sep or not start or not end:
        raise ValueError(f"{text!r} is not a range start-end")
    if len(start) != len(end):
        raise ValueError(f"range {text!r}: both ends must have the same number of digits")
    a, b = tn_key(start), tn_key(end)
    if b < a:
        raise ValueError(f"range {text!r}: end before start")
    return a, b


def credential_hash(token: str) -> str:
    """How a REST credential is stored and looked up: SHA-256 hex of the bearer token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Customer:
    """A customer of the originating provider: ``own`` is its attestation for numbers it holds
    (``A`` by default), ``other`` for numbers it does not (``B``); a gateway customer has
    ``C``/``C``.  ``tenant`` (optional) restricts it to calls signed for that tenant."""

    id: int
    name: str
    tenant: str | None = None
    own: str = "A"
    other: str = "B"


@dataclass(frozen=True)
class _Sources:
    """Networks → customer id, one dict per (IP version, prefix length), longest prefix first."""

    tables: tuple[tuple[int, int, dict[int, int]], ...] = ()
    #: source address -> customer id of recent calls (a provider has few SBC/trunk addresses)
    cache: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, items: Iterable[tuple[str, int]]) -> _Sources:
        by: dict[tuple[int, int], dict[int, int]] = {}
        for text, cid in items:
            net = ipaddress.ip_network(text, strict=False)
            by.setdefault((net.version, net.prefixlen), {})[int(net.network_address)] = cid
        tables = tuple((v, plen, d) for (v, plen), d in sorted(by.items(), key=lambda kv: -kv[0][1]))
        return cls(tables)

    def find(self, ip: str) -> int:
        cid = self.cache.get(ip)
        if cid is not None:
            return cid
        cid = self._find(ip)
        if len(self.cache) >= 65536:
            self.cache.clear()
        self.cache[ip] = cid
        return cid

    def _find(self, ip: str) -> int:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return 0
        v, n = addr.version, int(addr)
        width = 32 if v == 4 else 128
        for tv, plen, d in self.tables:
            if tv == v:
                cid = d.get((n >> (width - plen)) << (width - plen))
                if cid is not None:
                    return cid
        return 0


#: keys per block of the search (32 keys = 256 bytes = 4 cache lines); the list of every 32nd key
#: costs ≈ 40 / 32 = 1.25 bytes per TN
BLOCK = 32

#: the longest header value or credential (characters) remembered by :meth:`InventoryDecisions.decide`
#: (and by the REST API's bearer tokens): their caches (4,096 entries) stay bounded in bytes when
#: a client sends a new 16 KiB value on every request
REMEMBER_MAX = 1024


def _search(big: array) -> tuple[list, array, int, int, int]:
    """The search structure of sorted ``big``: ``(top, dir, shift, start, buckets)``.

    ``dir`` is a direct table over the keys' high bits: bucket ``b = (k - start) >> shift`` holds
    the keys ``big[dir[b]:dir[b+1]]`` (those of ``[start + (b << shift), start + (b + 1) << shift)``,
    ``start`` a multiple of ``1 << shift``: one operation on the large key fewer than
    ``(k >> shift) - base``, ≈ 80 instructions);
    there are ``buckets`` = ``len(dir) - 1`` of them, at most the power of two above
    ``len(big) / 4`` (at most 2 bytes per key).  ``top`` is ``big[::BLOCK]`` as a list of ints,
    for the buckets holding more than :data:`BLOCK` keys (keys packed densely in one region).

    Measured reason (callgrind, 1,000,000 TNs, ``bench/bench_inventory.py``'s REST mix):
    :func:`bisect.bisect_right` over the whole top list then :func:`bisect.bisect_left` in one
    block of 32 costs ≈ 4,400 instructions a lookup (≈ 5,000 at 10,000,000 TNs: 18 + 5 probes,
    each array probe making an int object); the bucket read from ``dir`` then a bisection of its
    few keys costs ≈ 1,500."""
    top = big[::BLOCK].tolist()
    n = len(big)
    if not n:
        return top, array("I", [0]), 0, 0, 0
    lo, hi = big[0], big[-1]
    limit = 1 << (n // 4).bit_length()
    shift = 0
    while (hi >> shift) - (lo >> shift) >= limit:
        shift += 1
    base = lo >> shift
    buckets = (hi >> shift) - base + 1
    dir_ = array("I", bytes(4 * (buckets + 1)))
    t = 0
    for b in range(1, buckets + 1):  # dir[b] = bisect_left(big, (base + b) << shift); dir[0] = 0
        start = (base + b) << shift
        t = bisect_left(top, start, t)  # top[t - 1] < start <= top[t]: the first key >= start is in block t - 1
        dir_[b] = bisect_left(big, start, (t - 1) * BLOCK, t * BLOCK if t * BLOCK < n else n) if t else 0
    return top, dir_, shift, base << shift, buckets


def _find(search: tuple[list, array, int, int, int], big: array, k: int) -> int:
    """Index of ``k`` in sorted ``big`` (``search`` = :func:`_search` of ``big``), or -1: the keys
    of its bucket (narrowed to one block with the top list when there are more than
    :data:`BLOCK` of them)."""
    top, dir_, shift, start, buckets = search
    b = (k - start) >> shift
    if b < 0 or b >= buckets:
        return -1
    lo = dir_[b]
    hi = dir_[b + 1]
    if hi - lo > BLOCK:
        j = bisect_right(top, k, lo // BLOCK, -(-hi // BLOCK))  # top[j - 1] <= k < top[j]
        if (j - 1) * BLOCK > lo:
            lo = (j - 1) * BLOCK
        if j * BLOCK < hi:
            hi = j * BLOCK
    i = bisect_left(big, k, lo, hi)
    return i if i < hi and big[i] == k else -1


@dataclass(frozen=True, eq=False, slots=True)
class InventoryIndex:
    """One immutable snapshot of the inventory at ``version`` (see the module docstring).

    Build it with :meth:`build`; apply live changes with :meth:`with_changes`."""

    version: int = 0
    customers: Mapping[int, Customer] = field(default_factory=dict)
    tns: array = field(default_factory=lambda: array("Q"))
    holders: array = field(default_factory=lambda: array("I"))
    range_starts: array = field(default_factory=lambda: array("Q"))
    range_ends: array = field(default_factory=lambda: array("Q"))
    range_holders: array = field(default_factory=lambda: array("I"))
    dno: array = field(default_factory=lambda: array("Q"))
    #: overlay: TN key -> customer id (0: removed since the arrays were built)
    tn_changes: Mapping[int, int] = field(default_factory=dict)
    #: overlay: DNO key -> listed (True) or removed (False)
    dno_changes: Mapping[int, bool] = field(default_factory=dict)
    sources: _Sources = field(default_factory=_Sources)
    by_header: Mapping[str, int] = field(default_factory=dict)
    by_credential: Mapping[str, int] = field(default_factory=dict)
    by_tenant: Mapping[str, int] = field(default_factory=dict)
    by_name: Mapping[str, int] = field(default_factory=dict)
    #: :func:`_search` of ``tns`` / ``dno`` (derived; built here when not given)
    tns_search: tuple = ()
    dno_search: tuple = ()
    #: ``(range starts as a list of ints, first start, last end)``: a list probe costs about half
    #: an array probe (no int object made per probe); ranges are few
    range_search: tuple = ()
    #: one byte per slot ``key % dno_slots``, 1 for the slot of every DNO number (16 slots per
    #: number, at least 64 KiB): most calling numbers are not on a list and are cleared by one byte
    #: read (≈ 94 %).  A byte rather than a bit per slot (16 instead of 2 bytes per DNO number)
    #: spares four integer operations a lookup (≈ 700 instructions, callgrind)
    dno_map: bytearray = field(default_factory=bytearray)
    dno_slots: int = field(default=0, init=False)  # len(dno_map), kept to spare a len() per lookup
    #: :class:`InventoryDecisions`' memo of recognitions on this index: deciding service ->
    #: tenant name -> caller's level -> recognition -> ``(customer id, level for the customer's
    #: numbers, level for the others)`` (see :meth:`InventoryDecisions.decide`)
    _seen: dict[Any, dict[str, dict[str | None, dict[Any, tuple[int, str, str]]]]] = field(default_factory=dict, init=False, repr=False)
    #: deciding service -> recognitions in its ``_seen`` memo (kept, not summed on each new one)
    _seen_n: dict[Any, int] = field(default_factory=dict, init=False, repr=False)
    #: whether live changes lie on top of the arrays (``tn_changes`` or ``dno_changes``)
    _overlay: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.tns_search:
            object.__setattr__(self, "tns_search", _search(self.tns))
        if not self.dno_search:
            object.__setattr__(self, "dno_search", _search(self.dno))
        if not self.range_search:
            starts = self.range_starts.tolist()
            object.__setattr__(self, "range_search", (starts, starts[0], self.range_ends[-1]) if starts else (starts, 1, 0))
        if not self.dno_map:
            dmap = bytearray(max(65536, 16 * len(self.dno)))
            n = len(dmap)
            for k in self.dno:
                dmap[k % n] = 1
            object.__setattr__(self, "dno_map", dmap)
        object.__setattr__(self, "dno_slots", len(self.dno_map))
        object.__setattr__(self, "_overlay", bool(self.tn_changes or self.dno_changes))

    # --- building -----------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        *,
        version: int,
        customers: Iterable[Customer],
        recognizers: Iterable[tuple[int, str, str]] = (),
        tns: array | None = None,
        holders: array | None = None,
        ranges: Iterable[tuple[int, int, int]] = (),
        dno: array | None = None,
    ) -> InventoryIndex:
        """An index from sorted arrays (``tns`` ascending with their ``holders``; ``dno``
        ascending), ``ranges`` as ``(start key, end key, customer id)`` and ``recognizers`` as
        ``(customer id, kind, value)``.  Raises :class:`ValueError` for unsorted arrays or
        overlapping ranges."""
        custs = {c.id: c for c in customers}
        tns = tns if tns is not None else array("Q")
        holders = holders if holders is not None else array("I")
        if len(tns) != len(holders):
            raise ValueError("tns and holders differ in length")
        rs = sorted(ranges)
        for (a0, b0, _), (a1, _b1, _) in zip(rs, rs[1:]):
            if a1 <= b0:
                raise ValueError(f"ranges {key_tn(a0)}-{key_tn(b0)} and {key_tn(a1)}-... overlap")
        src: list[tuple[str, int]] = []
        header: dict[str, int] = {}
        cred: dict[str, int] = {}
        tenant: dict[str, int] = {}
        for cid, kind, value in recognizers:
            if kind == "source":
                src.append((value, cid))
            elif kind == "header":
                header[value.strip().lower()] = cid
            elif kind == "credential":
                cred[value.lower()] = cid
            elif kind == "tenant":
                tenant[value.strip().lower()] = cid
        return cls(
            version=version,
            customers=custs,
            tns=tns,
            holders=holders,
            range_starts=array("Q", (r[0] for r in rs)),
            range_ends=array("Q", (r[1] for r in rs)),
            range_holders=array("I", (r[2] for r in rs)),
            dno=dno if dno is not None else array("Q"),
            sources=_Sources.build(src),
            by_header=header,
            by_credential=cred,
            by_tenant=tenant,
            by_name={c.name.lower(): c.id for c in custs.values()},
        )

    def with_changes(self, version: int, tn_changes: Mapping[int, int] = {}, dno_changes: Mapping[int, bool] = {}) -> InventoryIndex:
        """A new index with these TN (key → customer id, 0 removed) and DNO (key → listed)
        changes on top; the arrays are shared."""
        tc = dict(self.tn_changes)
        tc.update(tn_changes)
        dc = dict(self.dno_changes)
        dc.update(dno_changes)
        return InventoryIndex(
            version=version, customers=self.customers, tns=self.tns, holders=self.holders, range_starts=self.range_starts,
            range_ends=self.range_ends, range_holders=self.range_holders, dno=self.dno, tn_changes=tc, dno_changes=dc,
            sources=self.sources, by_header=self.by_header, by_credential=self.by_credential, by_tenant=self.by_tenant,
            by_name=self.by_name, tns_search=self.tns_search, dno_search=self.dno_search, range_search=self.range_search,
            dno_map=self.dno_map,
        )

    @property
    def overlay_size(self) -> int:
        return len(self.tn_changes) + len(self.dno_changes)

    # --- lookups (the signing hot path) ---------------------------------------------------------

    def holder(self, tn: str) -> int:
        """Id of the customer holding canonical ``tn`` (a single TN first, then a range); 0: none."""
        try:
            k = int("1" + tn)
        except ValueError:
            return 0
        return self.holder_key(k)

    def holder_key(self, k: int) -> int:
        """:meth:`holder` of a :func:`tn_key` key."""
        if self.tn_changes:
            c = self.tn_changes.get(k)
            if c is not None:
                return c if c else self._range(k)
        i = _find(self.tns_search, self.tns, k)
        if i >= 0:
            return self.holders[i]
        return self._range(k)

    def _range(self, k: int) -> int:
        starts, first, last = self.range_search
        if first <= k <= last:
            i = bisect_right(starts, k) - 1
            if k <= self.range_ends[i]:
                return self.range_holders[i]
        return 0

    def is_dno(self, tn: str) -> bool:
        """Whether canonical ``tn`` is on a Do-Not-Originate list."""
        try:
            k = int("1" + tn)
        except ValueError:
            return False
        return self.is_dno_key(k)

    def is_dno_key(self, k: int) -> bool:
        """:meth:`is_dno` of a :func:`tn_key` key."""
        if self.dno_changes:
            d = self.dno_changes.get(k)
            if d is not None:
                return d
        if not self.dno_map[k % self.dno_slots]:
            return False
        return _find(self.dno_search, self.dno, k) >= 0

    def customer_for(
        self, *, source_ip: str | None = None, header: str | None = None, credential: str | None = None, tenant: str | None = None
    ) -> Customer | None:
        """The calling customer: customer header value, then REST credential (the bearer token
        itself; hashed here), then SIP source address, then the signing tenant; None: unknown.
        A customer bound to a tenant is only recognised for calls signed for that tenant."""
        cid = 0
        if header:
            cid = self.by_header.get(header.strip().lower(), 0)
        if not cid and credential and self.by_credential:  # (hashed once per recognition: level remembers it)
            cid = self.by_credential.get(credential_hash(credential), 0)
        if not cid and source_ip and self.sources.tables:
            cid = self.sources.find(source_ip)
        if not cid and tenant and self.by_tenant:
            cid = self.by_tenant.get(tenant.lower(), 0)
        if not cid:
            return None
        c = self.customers.get(cid)
        if c is not None and c.tenant and tenant and c.tenant.lower() != tenant.lower():
            return None
        return c

    def attest(self, customer: Customer | None, tn: str, unknown: str = "C") -> str:
        """ATIS-1000074 §5.2.3 from the inventory: the customer's ``own`` level (A) when it holds
        ``tn``, its ``other`` level (B) when not, ``unknown`` (C) without a customer."""
        if customer is None:
            return unknown
        return customer.own if self.holder(tn) == customer.id else customer.other

    # --- sizes ----------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counts and the bytes of the arrays (the per-TN memory)."""
        arrays = (self.tns, self.holders, self.range_starts, self.range_ends, self.range_holders, self.dno)
        return {
            "version": self.version,
            "customers": len(self.customers),
            "tns": len(self.tns),
            "ranges": len(self.range_starts),
            "dno": len(self.dno),
            "overlay": self.overlay_size,
            "array_bytes": sum(a.buffer_info()[1] * a.itemsize for a in arrays),
        }


class LiveInventory:
    """The current :class:`InventoryIndex` of a worker, swapped whole by its loader
    (``serve.inventory.store.InventoryWatcher``), plus the worker's DNO counters.

    Reading ``.index`` once per call gives one consistent snapshot."""

    def __init__(self, index: InventoryIndex | None = None):
        self.index = index if index is not None else InventoryIndex()
        self.dno_refused = 0
        self.dno_downgraded = 0
        self.dno_verified = 0
        self.reloads = 0
        self.updates = 0

    def swap(self, index: InventoryIndex, *, full: bool) -> None:
        self.index = index
        if full:
            self.reloads += 1
        else:
            self.updates += 1

    def stats(self) -> dict[str, int]:
        """For ``/metrics`` (the ``stirshaken_verifier``-style gauge family of stats sources)."""
        s = self.index.stats()
        return {
            "inventory_version": s["version"],
            "inventory_tns": s["tns"],
            "inventory_ranges": s["ranges"],
            "inventory_dno": s["dno"],
            "inventory_overlay": s["overlay"],
            "inventory_dno_refused": self.dno_refused,
            "inventory_dno_signed_c": self.dno_downgraded,
            "inventory_dno_verified": self.dno_verified,
            "inventory_reloads": self.reloads,
            "inventory_updates": self.updates,
        }


class InventoryDecisions:
    """The attestation decision with an inventory in one Python frame: the base of
    :class:`~stirshaken.serve.signing.SigningService`, whose :meth:`decide` this is.

    The rules are written once, each where it belongs: the inventory's (DNO first, then the
    customer's ``own`` level for its numbers, ``other`` for the rest, ``unknown_attest`` without a
    customer) in :meth:`InventoryIndex.customer_for`, :meth:`InventoryIndex.is_dno_key`,
    :meth:`InventoryIndex.holder_key` and :meth:`InventoryIndex.attest`, of which :meth:`decide`
    writes out the usual case (property-tested against them, ``tests/test_inventory.py``); the
    service's in its hooks: :meth:`_configured` (no inventory), :meth:`_combine` (the caller's
    level with the inventory's, ``caller_attest``) and :meth:`_dno` (``dno_signing``).

    The subclass sets ``inventory`` (a :class:`LiveInventory` or None) and ``_unknown_attest``
    (the level without a customer)."""

    inventory: LiveInventory | None
    _unknown_attest: str

    # hooks: the service's rules
    def _configured(self, tenant: Any, orig_tn: str, requested: str | None, source_ip: str | None, customer: str | None) -> str:
        raise NotImplementedError

    def _combine(self, requested: str | None, level: str) -> str:
        raise NotImplementedError

    def _dno(self, inv: LiveInventory, orig_tn: str) -> str:
        raise NotImplementedError

    def decide(self, tenant: Any, orig_tn: str, requested: str | None = None, source_ip: str | None = None,
               customer: str | None = None, credential: str | None = None) -> str:
        """The attestation to sign canonical ``orig_tn`` with (ATIS-1000074 §5.2.3).

        Without an inventory: :meth:`_configured`.  With one: a DNO number gets :meth:`_dno`
        (refused or ``C``); otherwise the customer recognised by ``customer`` (header value),
        ``credential`` (REST bearer token), ``source_ip`` or the tenant (``tenant.name``) gets its
        own level (A) for its numbers, its other level (B) for the rest, and no customer
        ``unknown_attest`` (C); ``requested`` (the caller's level) is combined in by
        :meth:`_combine`.

        The parameters may be given by position (in this order): the REST path does, as a call
        with keyword arguments costs ≈ 400 instructions more (callgrind).  Written out for the
        usual cases (property-tested against the general methods, ``tests/test_inventory.py``):

        * the outcome of a recognition (customer, tenant, caller's level) is remembered per
          index and service (at most 4,096, nested dicts keyed by tenant name, caller's level,
          credential or (header, credential, source)): :meth:`InventoryIndex.customer_for` and
          :meth:`_combine` run once per caller, not once per call;
        * without live changes (no overlay) the DNO byte map test, the bucket searches of the
          DNO numbers and of the TNs (:func:`_find`'s usual branch) and the ranges are written
          out; with an overlay, :meth:`InventoryIndex.is_dno_key` and
          :meth:`InventoryIndex.holder_key` answer.

        Measured reason (``bench/bench_inventory.py --instructions --tns 1000000 --dno 100000
        --import-tns 0``, 2026-11-30, same machine and sitting): a REST signing request with the
        inventory cost 10,202 instructions more than without it (≈ 364,000) when
        ``SigningService.decide`` called ``InventoryIndex.level`` (two frames below REST, the
        customer remembered under a 4-tuple, the caller's level combined on every call), 9,233
        now; the bench's loop of ``decide`` alone went from 0.97 to 0.83 µs a call.  In process
        (``--rest-extra 32``, three runs of each tree, alternately): the minimum per request
        +1.71 to +2.05 µs now against +1.82 to +2.32 before (of 33 µs).  What is left: the key
        (``int("1" + tn)``, ≈ 1,800 instructions alone; ``int(tn) + 10 ** len(tn)`` costs ≈ 100
        more), the DNO byte map (≈ 540), and the bucket searches, whose every ``array`` read
        makes an int object (the interpreter does not specialise ``array`` indexing)."""
        inv = self.inventory
        if inv is None:
            return self._configured(tenant, orig_tn, requested, source_ip, customer)
        idx = inv.index
        try:  # the REST caller by its credential alone (no header, no source), else by the three
            cid, own, other = idx._seen[self][tenant.name][requested][credential if customer is None and source_ip is None
                                                                      else (customer, credential, source_ip)]
        except KeyError:
            cid, own, other = self._recognise(idx, tenant.name, requested, source_ip, customer, credential)
        try:
            k = int("1" + orig_tn)
        except ValueError:
            return other
        if idx._overlay:  # live changes on top of the arrays: the general methods
            if idx.is_dno_key(k):
                return self._dno(inv, orig_tn)
            return own if cid and idx.holder_key(k) == cid else other
        if idx.dno_map[k % idx.dno_slots]:  # the map clears ≈ 94 % of numbers with one byte read
            top, dir_, shift, start, buckets = idx.dno_search
            b = (k - start) >> shift
            if 0 <= b < buckets:
                lo = dir_[b]
                hi = dir_[b + 1]
                if hi - lo <= BLOCK:  # the usual bucket: bisect its keys (_find)
                    dno = idx.dno
                    i = bisect_left(dno, k, lo, hi)
                    if i < hi and dno[i] == k:
                        return self._dno(inv, orig_tn)
                elif _find(idx.dno_search, idx.dno, k) >= 0:
                    return self._dno(inv, orig_tn)
        if not cid:  # no customer, or the same level for every number
            return other
        top, dir_, shift, start, buckets = idx.tns_search
        b = (k - start) >> shift
        if 0 <= b < buckets:
            lo = dir_[b]
            hi = dir_[b + 1]
            if hi - lo <= BLOCK:  # the usual bucket: bisect its keys (_find)
                tns = idx.tns
                i = bisect_left(tns, k, lo, hi)
                if i < hi and tns[i] == k:
                    holder = idx.holders[i]
                    if holder:
                        return own if holder == cid else other
            else:
                i = _find(idx.tns_search, idx.tns, k)
                if i >= 0 and idx.holders[i]:
                    return own if idx.holders[i] == cid else other
        starts, first, last = idx.range_search
        if first <= k <= last:
            i = bisect_right(starts, k) - 1
            if k <= idx.range_ends[i]:
                return own if idx.range_holders[i] == cid else other
        return other

    def _recognise(self, idx: InventoryIndex, tenant: str, requested: str | None, source_ip: str | None, header: str | None,
                   credential: str | None) -> tuple[int, str, str]:
        """``(customer id, level for its numbers, level for the others)`` of a recognition
        (:meth:`InventoryIndex.customer_for`, the caller's level combined in by :meth:`_combine`),
        remembered in ``idx`` for :meth:`decide` (at most 4,096 per service and index); customer
        id 0 when both levels are the same (no customer, a gateway customer): no TN lookup then."""
        c = idx.customer_for(source_ip=source_ip, header=header, credential=credential, tenant=tenant)
        if c is None:
            other = self._combine(requested, self._unknown_attest)
            out = (0, other, other)
        else:
            own, other = self._combine(requested, c.own), self._combine(requested, c.other)
            out = (c.id if own != other else 0, own, other)
        if len(header or "") + len(credential or "") > REMEMBER_MAX:  # bounded in bytes too: not remembered
            return out
        memo = idx._seen.setdefault(self, {})
        n = idx._seen_n.get(self, 0)
        if n >= 4096:  # (a count kept, not a sum over the memo on each new caller: many new sources stay cheap)
            memo.clear()
            n = 0
        idx._seen_n[self] = n + 1
        who = credential if header is None and source_ip is None else (header, credential, source_ip)
        memo.setdefault(tenant, {}).setdefault(requested, {})[who] = out
        return out
