"""The HTTPS /metrics pieces that need no server: the verdict cache's bounds, the bearer token
read from a header, the review rate, and the TLS settings refused at start. (The reviews
against the real API server: tests/kube/test_metrics_https.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from nra.observe.metrics_auth import MAX_TOKEN_BYTES, TokenCache, Verdict, _Rate, bearer_token, digest
from nra.observe.tls import self_signed
from nra.settings import MAX_LINE, SettingsError, load_settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_cache_holds_at_most_its_entries_dropping_the_least_recently_used():
    clock = Clock()
    cache = TokenCache(max_entries=3, clock=clock)
    for name in ("a", "b", "c"):
        cache.put(digest(name), Verdict.ALLOWED, 30)
    assert cache.get(digest("a")) is Verdict.ALLOWED  # a used: b is now the oldest
    cache.put(digest("d"), Verdict.FORBIDDEN, 10)
    assert len(cache) == 3
    assert cache.get(digest("b")) is None
    assert [cache.get(digest(n)) for n in ("a", "c", "d")] == [Verdict.ALLOWED, Verdict.ALLOWED, Verdict.FORBIDDEN]
    for i in range(1000):  # a crowd of tokens: still three
        cache.put(digest(f"t{i}"), Verdict.UNAUTHENTICATED, 10)
    assert len(cache) == 3


def test_a_verdict_lasts_its_time_only():
    clock = Clock()
    cache = TokenCache(clock=clock)
    cache.put(digest("allowed"), Verdict.ALLOWED, 30)
    cache.put(digest("refused"), Verdict.UNAUTHENTICATED, 10)
    clock.now += 9.9
    assert cache.get(digest("refused")) is Verdict.UNAUTHENTICATED
    clock.now += 0.1
    assert cache.get(digest("refused")) is None and len(cache) == 1  # expired, and gone
    clock.now += 19.9
    assert cache.get(digest("allowed")) is Verdict.ALLOWED
    clock.now += 0.1
    assert cache.get(digest("allowed")) is None and len(cache) == 0


def test_the_key_is_a_digest_not_the_token():
    token = "eyJhbGciOiJSUzI1NiJ9.secret"
    assert len(digest(token)) == 32 and token.encode() not in digest(token)
    assert digest(token) != digest(token + "x")


@pytest.mark.parametrize("header, token", [
    (None, None), ("", None), ("Bearer", None), ("Bearer ", None), ("Basic dXNlcjpwYXNz", None),
    ("Bearer abc.def", "abc.def"), ("bearer  abc ", "abc"), ("BEARER abc", "abc"),
    ("Bearer " + "x" * (MAX_TOKEN_BYTES + 1), None), ("Bearer " + "x" * MAX_TOKEN_BYTES, "x" * MAX_TOKEN_BYTES),
])
def test_bearer_token(header, token):
    assert bearer_token(header) == token


def test_the_review_rate_refuses_past_its_rate_and_recovers():
    clock = Clock()
    rate = _Rate(5, clock)
    assert [rate.take() for _ in range(7)] == [True] * 5 + [False] * 2
    clock.now += 0.2  # one more
    assert [rate.take(), rate.take()] == [True, False]
    clock.now += 100  # the burst never grows past one second's worth
    assert sum(rate.take() for _ in range(10)) == 5


# -- the settings ------------------------------------------------------------------------------

@pytest.fixture
def pairs(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for name in ("one", "two"):
        cert, key = self_signed(["127.0.0.1"])
        files[f"{name}.crt"], files[f"{name}.key"] = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
        files[f"{name}.crt"].write_bytes(cert)
        files[f"{name}.key"].write_bytes(key)
    return files


def refused(**given: str) -> str:
    with pytest.raises(SettingsError) as err:
        load_settings(**given)
    line = str(err.value)
    assert "\n" not in line and len(line) <= MAX_LINE
    return line


def test_tls_files_are_checked_at_start(pairs):
    ok = load_settings(metrics_address="127.0.0.1:9120", metrics_tls_cert_file=str(pairs["one.crt"]),
                       metrics_tls_key_file=str(pairs["one.key"]))
    assert ok.metrics_endpoint == ("127.0.0.1", 9120) and ok.metrics_auth == "kubernetes"
    assert "do not load as a certificate and its key" in refused(
        metrics_address=":9120", metrics_tls_cert_file=str(pairs["one.crt"]), metrics_tls_key_file=str(pairs["two.key"]))
    assert "go together" in refused(metrics_address=":9120", metrics_tls_cert_file=str(pairs["one.crt"]))
    assert "needs METRICS_ADDRESS" in refused(metrics_tls_cert_file=str(pairs["one.crt"]),
                                              metrics_tls_key_file=str(pairs["one.key"]))
    assert "METRICS_TLS_KEY_FILE" in refused(metrics_address=":9120", metrics_tls_cert_file=str(pairs["one.crt"]),
                                             metrics_tls_key_file="/nonexistent/key")
    assert "not PEM" in refused(metrics_address=":9120", metrics_tls_cert_file="/proc/self/status",
                                metrics_tls_key_file=str(pairs["one.key"]))


def test_the_https_listener_needs_a_port_of_its_own_and_the_health_server():
    assert "same port" in refused(metrics_address="127.0.0.1:9101")  # HEALTH_ADDRESS's default
    assert "same port" in refused(metrics_address="10.0.0.1:9101", health_address=":9101")
    assert load_settings(metrics_address="10.0.0.1:9101", health_address="127.0.0.1:9101").metrics_endpoint
    assert "needs HEALTH_ADDRESS" in refused(metrics_address=":9120", health_address="off")
    assert "METRICS_AUTH" in refused(metrics_auth="tls")
