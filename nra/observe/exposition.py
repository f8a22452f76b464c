"""Prometheus' text format without prometheus_client.exposition.

That module holds the text encoder nra needs (for every rebuild of /metrics) next to
prometheus_client's own HTTP servers, push gateway and WSGI app, so importing it loads
http.server, socketserver, urllib.request, wsgiref and email (~2-4 MB of an idle agent's
RSS). `generate_latest` here writes the same bytes as prometheus_client's for nra's metrics
(names and label names valid in the classic format: no escaping of names; label values
escaped as the format says), and `choose_encoder` picks the same encoder and content type
for an Accept header, the OpenMetrics ones from prometheus_client.openmetrics (a small module);
any other case (a text/plain version 1 scraper's escaping scheme) is answered by
prometheus_client's own choose_encoder, imported then. tests/unit/test_exposition.py compares
both with prometheus_client's, byte for byte.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.utils import floatToGoString

CONTENT_TYPE_PLAIN_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"

_TYPES = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}
_SUFFIX = {"counter": "_total", "info": "_info"}


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _line(sample: Any) -> str:
    labels = ""
    if sample.labels:
        labels = "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(sample.labels.items())) + "}"
    timestamp = f" {int(float(sample.timestamp) * 1000):d}" if sample.timestamp is not None else ""
    return f"{sample.name}{labels} {floatToGoString(sample.value)}{timestamp}\n"


def generate_latest(registry: Any) -> bytes:
    """The classic text format (0.0.4) of every metric of `registry`."""
    output: list[str] = []
    for metric in registry.collect():
        name = metric.name + _SUFFIX.get(metric.type, "")
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        output.append(f"# HELP {name} {doc}\n# TYPE {name} {_TYPES.get(metric.type, metric.type)}\n")
        extra: dict[str, list[str]] = {}
        for sample in metric.samples:
            for suffix in ("_created", "_gsum", "_gcount"):
                if sample.name == metric.name + suffix:  # OpenMetrics' own: a gauge after
                    extra.setdefault(suffix, []).append(_line(sample))
                    break
            else:
                output.append(_line(sample))
        for suffix, lines in sorted(extra.items()):
            output.append(f"# HELP {metric.name}{suffix} {doc}\n# TYPE {metric.name}{suffix} gauge\n")
            output.extend(lines)
    return "".join(output).encode("utf-8")


def _param(tokens: list[str], key: str) -> str:
    for token in tokens:
        if "=" in token:
            k, value = token.strip().split("=", 1)
            if k == key:
                return value
    return ""


def choose_encoder(accept_header: str) -> tuple[Callable[[Any], bytes], str]:
    """prometheus_client.exposition.choose_encoder's choice."""
    for accepted in (accept_header or "").split(","):
        tokens = accepted.split(";")
        media = tokens[0].strip()
        if media == "application/openmetrics-text":
            version, escaping = _param(tokens, "version"), _param(tokens, "escaping")
            if not version:
                return (partial(openmetrics.generate_latest, escaping=openmetrics.UNDERSCORES, version="1.0.0"),
                        openmetrics.CONTENT_TYPE_LATEST)
            if version == "1.0.0" and escaping in ("", openmetrics.UNDERSCORES):
                return (partial(openmetrics.generate_latest, escaping=openmetrics.UNDERSCORES, version=version),
                        f"application/openmetrics-text; version={version}; charset=utf-8; "
                        f"escaping={openmetrics.UNDERSCORES}")
            break  # another version or escaping: prometheus_client decides
        if media == "text/plain" and _param(tokens, "version") not in ("", "0.0.4"):
            break
    else:
        return generate_latest, CONTENT_TYPE_PLAIN_0_0_4
    from prometheus_client.exposition import choose_encoder as theirs

    return theirs(accept_header)
