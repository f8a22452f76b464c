"""Logging through loguru, with the original agent's level names.

error, warn, info, verbose, debug, silly map onto loguru levels (verbose is a custom level
between debug and info; silly is TRACE). LOG_FORMAT=json writes one JSON object a line,
with the structured fields bound to the line (loguru's `extra`): `reconcile_id` and
`trigger` on every line of one reconcile, `peer` on a line about one peer, the prefix
counts on a line about the desired state, and the operation counts on a plan's summary.

The standard-library loggers of aiohttp and asyncio are routed here too (LibraryLogs): one
line per record, never a traceback, at LOG_LEVEL, and at most LIBRARY_BURST lines then one
per LIBRARY_EVERY_S seconds for each logger; the lines left out are counted in the next one.
A client's bad request is the client's fault: a warning, not an error.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import sys
import threading
import time
import traceback
from collections import Counter
from contextlib import contextmanager
from typing import Iterable, Iterator

from loguru import logger

#: the custom level between DEBUG and INFO; log with logger.log(VERBOSE, ...)
VERBOSE = "VERBOSE"

LEVELS = {
    "error": "ERROR",
    "warn": "WARNING",
    "info": "INFO",
    "verbose": VERBOSE,
    "debug": "DEBUG",
    "silly": "TRACE",
}

#: the library loggers routed through nra's (a bad HTTP request, an accept that failed)
LIBRARY_LOGGERS = ("aiohttp", "asyncio")
#: rate limit of each library logger: this many lines at once, then one every LIBRARY_EVERY_S
LIBRARY_BURST = 10
LIBRARY_EVERY_S = 1.0

_TEXT_FORMAT = "{time:YYYY-MM-DDTHH:mm:ss.SSSZZ} {level: <7} {message}"


def _ensure_verbose_level() -> None:
    try:
        logger.level(VERBOSE)
    except ValueError:
        logger.level(VERBOSE, no=15)


def _json_sink(message) -> None:
    record = message.record
    entry = {
        "time": record["time"].isoformat(),
        "level": record["level"].name.lower(),
        "msg": record["message"],
    }
    entry.update({k: v for k, v in record["extra"].items() if k != "json"})
    if record["exception"] is not None:
        exc = record["exception"]
        entry["exception"] = f"{exc.type.__name__}: {exc.value}"
        # a bug's traceback, so it can be reported (expected faults are logged without one)
        entry["traceback"] = "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
    sys.stderr.write(json.dumps(entry, default=str) + "\n")
    sys.stderr.flush()


class LibraryLogs(logging.Handler):
    """Standard-library records as one loguru line each, rate limited per logger.

    aiohttp logs each bad request with its traceback (nine lines) at ERROR; here it is one
    warning naming the client and the problem. A record's exception is reduced to its type
    and message: a library's internals are not nra's bug report."""

    def __init__(self, min_level: str = "INFO", burst: int = LIBRARY_BURST, every_s: float = LIBRARY_EVERY_S,
                 clock=time.monotonic) -> None:
        super().__init__()
        self.min_no = logger.level(min_level).no
        self.burst, self.every_s, self.clock = burst, every_s, clock
        self._buckets: dict[str, list[float]] = {}  # logger -> [tokens, last refill, left out]
        self._lock = threading.Lock()  # the HTTP server logs from its own thread

    def _allowed(self, name: str) -> tuple[bool, int]:
        """(log this one?, lines left out before it)."""
        with self._lock:
            now = self.clock()
            tokens, last, dropped = self._buckets.get(name, (float(self.burst), now, 0))
            tokens = min(float(self.burst), tokens + (now - last) / self.every_s)
            if tokens < 1:
                self._buckets[name] = [tokens, now, dropped + 1]
                return False, 0
            self._buckets[name] = [tokens - 1, now, 0]
            return True, int(dropped)

    def emit(self, record: logging.LogRecord) -> None:
        bad_request = _is_bad_request(record)
        level = "WARNING" if bad_request else _loguru_level(record.levelno)
        if logger.level(level).no < self.min_no:  # below LOG_LEVEL: not even counted
            return
        allowed, dropped = self._allowed(record.name)
        if not allowed:
            return
        try:
            text = record.getMessage()
        except Exception:  # a library's bad format string must not cost a line of ours
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += f": {type(exc).__name__}: {_one_line(str(exc))}"
        if bad_request:
            text = "http: bad request: " + text.removeprefix("Error handling request ")
        else:
            text = f"{record.name}: {text}"
        if dropped:
            text += f" ({dropped} more line(s) of {record.name} left out, at most {self.burst} "
            text += f"then one every {self.every_s:g} s)"
        logger.log(level, "{}", _one_line(text, 1000))


def _is_bad_request(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    if exc is None or not record.name.startswith("aiohttp"):
        return False
    from aiohttp.http_exceptions import HttpProcessingError

    return isinstance(exc, HttpProcessingError)


def _loguru_level(levelno: int) -> str:
    for threshold, name in ((logging.ERROR, "ERROR"), (logging.WARNING, "WARNING"), (logging.INFO, "INFO")):
        if levelno >= threshold:
            return name
    return "DEBUG"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def route_library_logs(loguru_level: str) -> None:
    """aiohttp's and asyncio's loggers through nra's, at LOG_LEVEL, rate limited."""
    _ensure_verbose_level()
    handler = LibraryLogs(loguru_level)
    # (loguru's level numbers are the standard library's: TRACE 5, VERBOSE 15)
    stdlib_level = max(logging.DEBUG, logger.level(loguru_level).no)
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.handlers = [handler]
        library.propagate = False
        library.setLevel(stdlib_level)


#: at most this many operations of one reconcile are logged one per line at INFO; more are
#: summarised in one line (a first reconcile of 20,000 prefixes is one line, not 20,000)
MAX_OPERATIONS_LOGGED = 20
_reconcile_ids = itertools.count(1)


@contextmanager
def reconcile_context(trigger: str) -> Iterator[int]:
    """Every line logged inside carries this reconcile's id (counted from 1 per process)
    and what triggered it."""
    reconcile_id = next(_reconcile_ids)
    with logger.contextualize(reconcile_id=reconcile_id, trigger=trigger):
        yield reconcile_id


def intent_fields(peers: Iterable, prefix_counts: dict[int, int]) -> dict[str, int]:
    """The fields of a line about a desired state: peer and prefix counts per family."""
    versions = Counter(p.address.version for p in peers)
    return {"peers_ipv4": versions[4], "peers_ipv6": versions[6],
            "prefixes_ipv4": prefix_counts.get(4, 0), "prefixes_ipv6": prefix_counts.get(6, 0)}


def peer_field(text: str, peers: Iterable) -> dict[str, str]:
    """{"peer": address} when the text names exactly one of these peers, else {}."""
    words = set(re.split(r"[\s,;:()\[\]]+", text))
    named = {str(p) for p in peers} & words
    return {"peer": named.pop()} if len(named) == 1 else {}


def log_operations(operations: Iterable, trigger: str) -> None:
    """The operations a reconcile applies: each on its own INFO line when they are few; when
    they are many, one INFO line counting them by kind and each at DEBUG."""
    operations = list(operations)
    if len(operations) <= MAX_OPERATIONS_LOGGED:
        for op in operations:
            logger.info("{} ({})", op, trigger)
        return
    kinds = Counter(op.kind for op in operations)
    logger.bind(operations=len(operations), **{f"operations_{k}": n for k, n in kinds.items()}).info(
        "applying {:,} operations ({}; {}); each is logged at debug level", len(operations), trigger,
        ", ".join(f"{n:,} {kind}" for kind, n in sorted(kinds.items())))
    for op in operations:
        logger.debug("{}", op)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    _ensure_verbose_level()
    logger.remove()
    loguru_level = LEVELS.get(level, "INFO")
    route_library_logs(loguru_level)
    if fmt == "json":
        logger.add(_json_sink, level=loguru_level, backtrace=False, diagnose=False)
    else:
        logger.add(sys.stderr, level=loguru_level, format=_TEXT_FORMAT, backtrace=False, diagnose=False)


_ensure_verbose_level()
