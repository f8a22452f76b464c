"""HTTPS /metrics against the real kube-apiserver (tests/realcluster.py), under the RBAC the
chart renders with prometheus.secureMetricsPort: nra (a daemon programming a throwaway
network namespace) asks the API server about each scraper's token (TokenReview,
SubjectAccessReview) with the identity the chart gives it. A scraper bound to the chart's
metrics-reader ClusterRole gets the metrics; no token or a made-up one 401; a real token
without the binding 403; with the API server stopped, a token not yet reviewed 503 and nra
keeps running. No kube-rbac-proxy: nra does it itself.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from nra.observe.metrics_auth import KubernetesReviewer, ReviewUnavailable, Verdict
from nra.sources.kube.client import api_client_factory
from testbed.cluster import Cluster
from testbed.ports import free_port
from tests.agent.helpers import TWO_PEERS_V4_V6, Daemon, clean_env
from tests.netns import NetNS
from tests.realcluster import apply, chart_rbac, identity, unique
from tests.wait import wait_for

pytestmark = pytest.mark.kernel

SECURE = ("--set", "prometheus.secureMetricsPort=9120")


def scraper_values(ns: str, name: str = "scraper") -> tuple[str, ...]:
    return (*SECURE, "--set", f"prometheus.scrapers[0].name={name}", "--set", f"prometheus.scrapers[0].namespace={ns}")


def service_account(ns: str, name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}


def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by openssl (not by nra)."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=nra-test",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def scrape(port: int, token: str | None, cafile: Path, path: str = "/metrics") -> tuple[int, str]:
    """GET over HTTPS, the server's certificate checked against `cafile` (and 127.0.0.1)."""
    context = ssl.create_default_context(cafile=str(cafile))
    request = urllib.request.Request(f"https://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def plain(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def test_https_metrics_under_the_charts_rbac(real_cluster: Cluster, node_ns: NetNS, tmp_path: Path):
    ns = unique("mlb")
    rbac = chart_rbac(ns, *scraper_values(ns))
    roles = {o["metadata"]["name"] for o in rbac if o["kind"] == "ClusterRole"}
    assert any(r.endswith("-metrics-reader") for r in roles) and any(r.endswith("-metrics-auth") for r in roles)
    kubeconfig = identity(real_cluster, rbac, tmp_path / "nra.kubeconfig")
    apply(real_cluster, service_account(ns, "scraper"), service_account(ns, "stranger"))
    allowed = real_cluster.service_account_token(ns, "scraper")
    later = real_cluster.service_account_token(ns, "scraper")  # another token, reviewed only later
    stranger = real_cluster.service_account_token(ns, "stranger")
    cert, key = certificate(tmp_path)
    config = tmp_path / "metallb.yaml"
    config.write_text(TWO_PEERS_V4_V6)
    health, secure = free_port(), free_port()
    daemon = Daemon("--static-file", str(config), "--netns", node_ns.name, "--kubeconfig", str(kubeconfig),
                    log_path=tmp_path / "nra.log",
                    env=clean_env(HEALTH_ADDRESS=f"127.0.0.1:{health}", METRICS_ADDRESS=f"127.0.0.1:{secure}",
                                  METRICS_TLS_CERT_FILE=str(cert), METRICS_TLS_KEY_FILE=str(key),
                                  MAX_RECONCILE_WAIT="0"))
    stopped = False
    try:
        wait_for(lambda: plain(health, "/readyz")[0] == 200 or daemon.proc.poll() is not None, 20, what="ready")
        assert daemon.proc.poll() is None, daemon.log()

        code, body = scrape(secure, allowed, cert)
        assert code == 200, (body, daemon.log())
        assert 'nra_peers_in_route{family="ipv4"} 2.0' in body
        code, body = scrape(secure, None, cert)
        assert code == 401 and "bearer token" in body
        code, body = scrape(secure, "made-up." + "x" * 40, cert)
        assert code == 401 and "does not accept" in body
        code, body = scrape(secure, stranger, cert)
        assert code == 403 and "metrics-reader" in body
        assert scrape(secure, allowed, cert, "/healthz")[0] == 404  # the HTTPS listener serves /metrics only
        assert plain(secure, "/metrics")[0] != 200  # no plain HTTP on the HTTPS port
        # plain /metrics stays on loopback (the health listener is loopback here)
        assert plain(health, "/metrics")[0] == 200

        real_cluster.stop_apiserver()
        stopped = True
        code, body = scrape(secure, later, cert)
        assert code == 503 and "cannot review" in body, body
        assert scrape(secure, allowed, cert)[0] == 200  # reviewed a moment ago: the answer is kept
        assert daemon.proc.poll() is None and plain(health, "/healthz")[0] == 200
        real_cluster.start_apiserver()
        stopped = False
        wait_for(lambda: scrape(secure, later, cert)[0] == 200, 30, what="reviews again once the server is back")
    finally:
        if stopped:
            real_cluster.start_apiserver()
        assert daemon.stop() == 0, daemon.log()
    log = daemon.log()
    assert "Traceback" not in log, log
    for token in (allowed, later, stranger):
        assert token not in log and token[-24:] not in log  # never logged, not even in part
    assert "metrics over HTTPS on https://127.0.0.1" in log and "tls.crt" in log
    assert "scrapes are answered 503" in log  # said once, while the server was down


def test_self_signed_certificate_and_no_grant_for_reviews(real_cluster: Cluster, node_ns: NetNS, tmp_path: Path):
    """No certificate files: a self-signed one, which a client can check against itself
    (it names 127.0.0.1). nra's identity without the chart's metrics-auth grant: every
    scrape 503 and the log says what is missing."""
    ns = unique("mlb")
    rbac = [o for o in chart_rbac(ns, *scraper_values(ns)) if not o["metadata"]["name"].endswith("-metrics-auth")]
    kubeconfig = identity(real_cluster, rbac, tmp_path / "nra.kubeconfig")
    apply(real_cluster, service_account(ns, "scraper"))
    allowed = real_cluster.service_account_token(ns, "scraper")
    config = tmp_path / "metallb.yaml"
    config.write_text(TWO_PEERS_V4_V6)
    health, secure = free_port(), free_port()
    daemon = Daemon("--static-file", str(config), "--netns", node_ns.name, "--kubeconfig", str(kubeconfig),
                    log_path=tmp_path / "nra.log",
                    env=clean_env(HEALTH_ADDRESS=f"127.0.0.1:{health}", METRICS_ADDRESS=f"127.0.0.1:{secure}",
                                  MAX_RECONCILE_WAIT="0"))
    try:
        wait_for(lambda: plain(health, "/readyz")[0] == 200 or daemon.proc.poll() is not None, 20, what="ready")
        assert daemon.proc.poll() is None, daemon.log()
        served = tmp_path / "served.crt"
        served.write_text(ssl.get_server_certificate(("127.0.0.1", secure), timeout=5))
        code, body = scrape(secure, allowed, served)  # verified: its own CA, names 127.0.0.1
        assert code == 503 and "needs `create` on tokenreviews" in body, body
    finally:
        assert daemon.stop() == 0, daemon.log()
    log = daemon.log()
    assert "self-signed" in log and "needs `create` on tokenreviews" in log, log


async def test_reviews_are_shared_kept_and_bounded(real_cluster: Cluster, tmp_path: Path):
    """The reviewer itself against the real server: concurrent scrapes with one new token
    cost one review; the answer is kept; new tokens past the rate are 503, not sent."""
    ns = unique("mlb")
    kubeconfig = identity(real_cluster, chart_rbac(ns, *scraper_values(ns)), tmp_path / "nra.kubeconfig")
    apply(real_cluster, service_account(ns, "scraper"), service_account(ns, "stranger"))
    allowed = real_cluster.service_account_token(ns, "scraper")
    stranger = real_cluster.service_account_token(ns, "stranger")
    now = [1000.0]  # the clock stands still: the rate's one second never passes
    reviewer = KubernetesReviewer(api_client_factory(str(kubeconfig)), rate=3, clock=lambda: now[0])
    try:
        verdicts = await asyncio.gather(*(reviewer.review(allowed) for _ in range(20)))
        assert set(verdicts) == {Verdict.ALLOWED} and reviewer.reviews == 1
        assert await reviewer.review(allowed) is Verdict.ALLOWED and reviewer.reviews == 1  # kept
        assert await reviewer.review(stranger) is Verdict.FORBIDDEN and reviewer.reviews == 2
        assert await reviewer.review("made-up") is Verdict.UNAUTHENTICATED and reviewer.reviews == 3
        with pytest.raises(ReviewUnavailable, match="new tokens a second"):
            await reviewer.review("made-up-2")  # the fourth new token within a second
        assert reviewer.reviews == 3 and len(reviewer.cache) == 3
        assert all(len(key) == 32 for key in reviewer.cache._entries)  # SHA-256 digests, not tokens
        now[0] += 31  # the allowed answer has expired: asked again
        assert await reviewer.review(allowed) is Verdict.ALLOWED and reviewer.reviews == 4
    finally:
        await reviewer.close()


def test_kubernetes_auth_without_any_credentials_is_refused_at_start(node_ns: NetNS, tmp_path: Path):
    config = tmp_path / "metallb.yaml"
    config.write_text(TWO_PEERS_V4_V6)
    env = clean_env(HEALTH_ADDRESS=f"127.0.0.1:{free_port()}", METRICS_ADDRESS=f"127.0.0.1:{free_port()}",
                    HOME=str(tmp_path))  # (no ~/.kube/config)
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env.pop("KUBECONFIG", None)
    daemon = Daemon("--static-file", str(config), "--netns", node_ns.name, env=env, log_path=tmp_path / "nra.log")
    assert daemon.proc.wait(30) == 2
    daemon.stop()
    log = daemon.log()
    assert "METRICS_AUTH=kubernetes" in log and "no Kubernetes credentials" in log and "Traceback" not in log, log
