"""The /status and /metrics documents, built by the daemon and served as bytes.

The HTTP server runs in a thread of its own; a request there must cost the reconciler
nothing, so nothing is built in the server's thread. The daemon calls `Documents.refresh()`
after each reconcile and each configuration it loads; for counters that move in between
(watch restarts, hooks), a request finding documents older than REFRESH_S asks the daemon's
loop for a rebuild (`request()`: at most one open, none during a reconcile), so an agent
nobody asks builds nothing. The server reads the last `Snapshot`, one reference swapped
whole, so it never sees half of one.

/status is bounded: counts, and the first STATUS_PREFIXES prefixes of each family in address
order. The whole list is built only on an explicit request (`/status?prefixes=all`), by the
server, streamed (`full_status_chunks`).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import operator
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from nra.observe.exposition import generate_latest
from nra.observe.status_report import StatusDetails, status_document

#: prefixes of each family shown by /status (the rest: /status?prefixes=all)
STATUS_PREFIXES = 100
#: documents older than this are rebuilt when asked for
REFRESH_S = 2.0
#: the fields of /status the server answers at each request (AgentStatus's own answers,
#: so they stay true while the daemon cannot refresh the rest)
LIVE_FIELDS = ("ready", "ready_reason", "live", "live_reason")
#: prefixes per chunk of a streamed full listing
_CHUNK_PREFIXES = 2000

_BY_FAMILY_AND_ADDRESS = operator.attrgetter("version", "interval")
_VERSION, _INTERVAL = operator.attrgetter("version"), operator.attrgetter("interval")
#: prefixes kept beyond those shown, so that removals rarely need a whole sort again
_HEAD_SPARE = 400
#: a change larger than this sorts the whole set again
_HEAD_CHANGE_MAX = 5000


def sorted_prefixes(prefixes: frozenset) -> list:
    """IPv4 then IPv6, each in address order (by the interval nra's prefixes keep: a sort
    in C, 60 ms at 100,000, where comparing networks costs ten times that). Prefixes of one
    family (the usual) are sorted by the interval alone: the interval is the prefix's own
    tuple, where a (family, interval) key is a new one per prefix (100,000 small objects at
    once, whose allocator arenas outlived the sort in the RSS)."""
    try:
        if len(set(map(_VERSION, prefixes))) <= 1:
            return sorted(prefixes, key=_INTERVAL)
        return sorted(prefixes, key=_BY_FAMILY_AND_ADDRESS)
    except AttributeError:  # plain ipaddress networks (built by hand, not parsed)
        return sorted(prefixes, key=lambda p: (p.version, p))


class PrefixHeads:
    """The first prefixes of each family (`needed`, and a spare) in address order, kept across intents.

    Sorting 100,000 prefixes after every reconcile cost more than the reconcile of a one-line
    change; a change adds and removes a few. Why the update is exact: every prefix of the last
    set beyond its head sorts after every prefix of that head, so the first len(kept) of
    sorted(kept + added) are the first len(kept) of the new set (kept: the head minus what was
    removed). When removals leave fewer than `needed` kept, or the change is large, the whole
    set is sorted again."""

    def __init__(self, needed: int, spare: int = _HEAD_SPARE) -> None:
        self.needed, self.size = needed, needed + spare
        self._prefixes: frozenset = frozenset()
        #: family -> (its first prefixes in order, True if that is all of the family)
        self._heads: dict[int, tuple[list, bool]] = {4: ([], True), 6: ([], True)}

    def update(self, prefixes: frozenset) -> dict[int, list]:
        if prefixes is not self._prefixes:
            added, removed = prefixes - self._prefixes, self._prefixes - prefixes
            if len(added) + len(removed) > _HEAD_CHANGE_MAX or not self._patch(added, removed):
                self._sort(prefixes)
            self._prefixes = prefixes
        return {family: head for family, (head, _) in self._heads.items()}

    def _sort(self, prefixes: frozenset) -> None:
        ordered = sorted_prefixes(prefixes)
        v4 = sum(1 for _ in itertools.takewhile(lambda p: p.version == 4, ordered))
        for family, part in ((4, ordered[:v4]), (6, ordered[v4:])):
            self._heads[family] = (part[:self.size], len(part) <= self.size)

    def _patch(self, added: frozenset, removed: frozenset) -> bool:
        patched = {}
        for family, (head, complete) in self._heads.items():
            kept = [p for p in head if p not in removed] if removed else head
            new = [p for p in added if p.version == family]
            if not complete and len(kept) < self.needed:
                return False  # the prefixes after the head are not known here
            merged = sorted_prefixes(frozenset(kept).union(new)) if new else kept
            if complete:
                patched[family] = (merged[:self.size], len(merged) <= self.size)
            else:
                patched[family] = (merged[:len(kept)], False)
        self._heads = patched
        return True


@dataclass(frozen=True)
class Snapshot:
    """One build of the documents."""

    #: /status's members after LIVE_FIELDS, as JSON text without the opening brace
    status_rest: bytes
    #: the Prometheus text exposition of nra's registry
    metrics: bytes
    #: the intent /status described (for the full listing), and its prefixes sorted, once
    intent: Any
    built_at: float


EMPTY = Snapshot(status_rest=b'"built": false}', metrics=b"", intent=None, built_at=0.0)


class Documents:
    """What the daemon publishes for the HTTP server."""

    def __init__(self, status: Any, details: Callable[[], StatusDetails] | None = None,
                 registry: Any = None, prefixes_shown: int = STATUS_PREFIXES) -> None:
        from nra.observe.metrics import REGISTRY

        self.status = status
        self.details = details
        self.registry = registry if registry is not None else REGISTRY
        self.prefixes_shown = prefixes_shown
        self.snapshot: Snapshot = EMPTY
        self._head: tuple[Any, dict[str, list[str]] | None] = (None, None)
        self._heads = PrefixHeads(prefixes_shown)
        self._sorted: tuple[Any, list] = (None, [])
        #: schedules a callback into the daemon's loop, from any thread (the daemon sets
        #: it: loop.call_soon_threadsafe); None: only the owner refreshes
        self.schedule: Callable[[Callable[[], None]], Any] | None = None
        self._built_monotonic = 0.0
        self._lock = threading.Lock()
        self._pending: concurrent.futures.Future | None = None

    def request(self) -> concurrent.futures.Future | None:
        """From the server's thread: documents older than REFRESH_S are rebuilt in the
        daemon's loop. Returns a future done once that loop answered (rebuilt, or declined
        during a reconcile), or None when they are fresh or nothing can rebuild them."""
        if self.schedule is None or time.monotonic() - self._built_monotonic < REFRESH_S:
            return None
        with self._lock:
            if self._pending is None:
                pending: concurrent.futures.Future = concurrent.futures.Future()
                try:
                    self.schedule(self._answer)
                except RuntimeError:  # the daemon's loop is closed: it is stopping
                    return None
                self._pending = pending
            return self._pending

    def _answer(self) -> None:
        """In the daemon's loop: rebuild unless a reconcile runs (a new configuration's
        documents follow its reconcile, never precede it), then answer the request."""
        try:
            if self.status.busy_since is None:
                self.refresh()
        finally:
            with self._lock:
                pending, self._pending = self._pending, None
            if pending is not None and not pending.done():
                pending.set_result(None)

    def refresh(self) -> Snapshot:
        """Build both documents now (in the daemon's loop); the server serves them from here."""
        details = self.details() if self.details else StatusDetails()
        head = self._prefix_head(details.intent) if details.intent is not None else None
        doc = status_document(self.status, details, self.registry, prefixes=head)
        for name in LIVE_FIELDS:
            doc.pop(name, None)
        doc["built_at"] = time.time()
        rest = json.dumps(doc, separators=(",", ":")).encode()[1:]
        self.snapshot = Snapshot(status_rest=rest, metrics=generate_latest(self.registry),
                                 intent=details.intent, built_at=doc["built_at"])
        self._built_monotonic = time.monotonic()
        return self.snapshot

    def _prefix_head(self, intent: Any) -> dict[str, list[str]]:
        # the head changes only with the intent, and then by what the change added or removed
        if self._head[0] is not intent:
            heads = self._heads.update(intent.prefixes)
            head = {"ipv4": [str(p) for p in heads[4][:self.prefixes_shown]],
                    "ipv6": [str(p) for p in heads[6][:self.prefixes_shown]]}
            self._head = (intent, head)
        return self._head[1]

    def status_body(self, snapshot: Snapshot | None = None) -> bytes:
        """/status as sent: the live answers now, then the last build."""
        snapshot = snapshot or self.snapshot
        return live_head(self.status) + snapshot.status_rest

    def full_status_chunks(self, snapshot: Snapshot | None = None) -> Iterator[bytes]:
        """/status?prefixes=all: the same document with every prefix, in chunks (built by
        the server on request: the daemon never pays for it)."""
        snapshot = snapshot or self.snapshot
        rest = snapshot.status_rest
        intent = snapshot.intent
        yield live_head(self.status)
        if intent is None:
            yield rest
            return
        # the bounded "prefixes" member is replaced by the whole lists
        doc = json.loads(b"{" + rest)
        doc.pop("prefixes", None)
        doc["prefixes_complete"] = True  # (the "prefixes" member comes last, streamed)
        yield json.dumps(doc, separators=(",", ":")).encode()[1:-1] + b',"prefixes":{'
        if self._sorted[0] is not intent:
            self._sorted = (intent, sorted_prefixes(intent.prefixes))
        ordered = self._sorted[1]
        v4 = intent.prefix_counts[4]
        for index, (family, part) in enumerate((("ipv4", ordered[:v4]), ("ipv6", ordered[v4:]))):
            yield (b"," if index else b"") + f'"{family}":['.encode()
            for start in range(0, len(part), _CHUNK_PREFIXES):
                text = ",".join(f'"{p}"' for p in part[start:start + _CHUNK_PREFIXES])
                yield (b"," if start else b"") + text.encode()
            yield b"]"
        yield b"}}"


def live_head(status: Any) -> bytes:
    """`{"ready":...,"ready_reason":...,"live":...,"live_reason":...,` answered now."""
    (ready, ready_reason), (live, live_reason) = status.readiness(), status.liveness()
    head = {"ready": ready, "ready_reason": ready_reason, "live": live, "live_reason": live_reason}
    return json.dumps(head, separators=(",", ":")).encode()[:-1] + b","
