"""Logging through loguru, with the original agent's level names.

error, warn, info, verbose, debug, silly map onto loguru levels (verbose is a custom level
between debug and info; silly is TRACE). LOG_FORMAT=json writes one JSON object a line.
"""

from __future__ import annotations

import json
import sys
import traceback

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


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    _ensure_verbose_level()
    logger.remove()
    loguru_level = LEVELS.get(level, "INFO")
    if fmt == "json":
        logger.add(_json_sink, level=loguru_level, backtrace=False, diagnose=False)
    else:
        logger.add(sys.stderr, level=loguru_level, format=_TEXT_FORMAT, backtrace=False, diagnose=False)


_ensure_verbose_level()
