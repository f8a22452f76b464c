"""Bugs are logged with their traceback, in both log formats; expected faults are not."""

from __future__ import annotations

import json

from loguru import logger

from nra.observe.logs import setup_logging


def test_json_logs_carry_a_bugs_traceback(capsys):
    setup_logging("info", "json")
    try:
        try:
            {}["missing"]
        except KeyError as exc:
            logger.opt(exception=exc).error("reconcile failed on an unexpected error: {}", "KeyError")
        logger.error("reconcile failed: {}", "Network is unreachable (errno 101)")
    finally:
        setup_logging()
    bug, fault = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert bug["exception"] == "KeyError: 'missing'"
    assert bug["traceback"].startswith("Traceback (most recent call last):") and "test_logs.py" in bug["traceback"]
    assert "traceback" not in fault and fault["msg"] == "reconcile failed: Network is unreachable (errno 101)"
