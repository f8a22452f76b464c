"""Logging through loguru, with the original agent's level names.

error, warn, info, verbose, debug, silly map onto loguru levels (verbose is a custom level
between debug and info; silly is TRACE). LOG_FORMAT=json writes one JSON object a line,
with the structured fields bound to the line (loguru's `extra`): `reconcile_id` and
`trigger` on every line of one reconcile, `peer` on a line about one peer, the prefix
counts on a line about the desired state, and the operation counts on a plan's summary.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
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
    if fmt == "json":
        logger.add(_json_sink, level=loguru_level, backtrace=False, diagnose=False)
    else:
        logger.add(sys.stderr, level=loguru_level, format=_TEXT_FORMAT, backtrace=False, diagnose=False)


_ensure_verbose_level()
