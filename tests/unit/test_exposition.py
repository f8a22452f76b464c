"""nra.observe.exposition writes what prometheus_client.exposition writes, byte for byte."""

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client import exposition as theirs

from nra.observe import exposition, metrics


def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("c_events", "a counter\\ with a backslash\nand a newline", ["kind"], registry=reg).labels(
        kind='quote " back \\ new\nline').inc(3)
    Gauge("g_plain", "a gauge", registry=reg).set(1.5)
    Gauge("g_inf", "infinities", ["side"], registry=reg).labels(side="up").set(float("inf"))
    h = Histogram("h_seconds", "a histogram", ["op"], buckets=(0.01, 0.1, 1), registry=reg)
    h.labels(op="b").observe(0.05)
    h.labels(op="a").observe(2)
    Info("i_build", "an info", registry=reg).info({"version": "1.2.3", "commit": "abc"})
    return reg


def test_generate_latest_same_bytes():
    reg = registry()
    assert exposition.generate_latest(reg) == theirs.generate_latest(reg)


def test_generate_latest_of_nras_own_metrics():
    reg = metrics.REGISTRY
    assert exposition.generate_latest(reg) == theirs.generate_latest(reg)
    assert b"# TYPE" in exposition.generate_latest(reg)


ACCEPTS = [
    "", "*/*", "text/plain", "text/plain;version=0.0.4", "text/plain; version=1.0.0",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text", "application/openmetrics-text;version=1.0.0",
    "application/openmetrics-text; version=1.0.0; escaping=underscores",
    "application/openmetrics-text;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=0.0.1,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",  # Prometheus 2
    "application/openmetrics-text;version=2.0.0",
]


@pytest.mark.parametrize("accept", ACCEPTS)
def test_choose_encoder_same_choice(accept):
    reg = registry()
    encode, content_type = exposition.choose_encoder(accept)
    their_encode, their_type = theirs.choose_encoder(accept)
    assert content_type == their_type
    assert encode(reg) == their_encode(reg)
