#!/usr/bin/env python3
"""What HTTPS /metrics costs (issue 18 point 5): one scrape's time, as a scraper sees it,
through nra's HTTPS listener against a private real kube-apiserver (testbed.cluster), nra
under the chart's rendered RBAC, as a subprocess programming a throwaway network namespace
(run as root), as in tests/kube/test_metrics_https.py.

Each scrape opens a new connection (the worst case: Prometheus keeps its connections).
  plain       http://127.0.0.1:<health>/metrics (loopback), no TLS, no token
  https-kept  HTTPS with a token already reviewed (the cache answers)
  https-new   HTTPS with a token never seen: a TokenReview and a SubjectAccessReview first;
              paced at 10 a second, under nra's REVIEW_RATE
Also: the time nra takes to make its self-signed certificate (in this process).

Usage: .venv/bin/python benchmarks/metrics_https_bench.py [--scrapes 200]
"""

from __future__ import annotations

import argparse
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nra.observe.tls import self_signed  # noqa: E402
from testbed.cluster import Cluster, missing_binaries  # noqa: E402
from testbed.netns import add_peer_link, new_netns  # noqa: E402
from testbed.ports import free_port  # noqa: E402
from tests.agent.helpers import TWO_PEERS_V4_V6, Daemon, clean_env  # noqa: E402
from tests.realcluster import apply, chart_rbac, identity, unique  # noqa: E402


def timed(url: str, token: str | None, context: ssl.SSLContext | None) -> float:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=10, context=context) as resp:
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url}: {resp.status}")
    return (time.perf_counter() - started) * 1000


def summary(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    return (f"{name:11} n={len(ms):4}  median {statistics.median(ms):6.2f} ms  "
            f"p90 {ms[int(len(ms) * 0.9) - 1]:6.2f} ms  max {ms[-1]:6.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    missing = missing_binaries()
    if missing:
        print(f"missing {', '.join(missing)}: run scripts/cluster build", file=sys.stderr)
        return 2
    made = []
    for _ in range(20):
        started = time.perf_counter()
        self_signed(["10.0.0.1", "localhost"])
        made.append((time.perf_counter() - started) * 1000)

    with tempfile.TemporaryDirectory(prefix="nra-mhb-") as tmp:
        tmp_path = Path(tmp)
        cluster = Cluster(tmp_path / "cluster")
        cluster.up(log=lambda _m: None)
        ns_name = unique("mhb")
        netns = new_netns("nra-mhb")
        try:
            add_peer_link(netns)
            rbac = chart_rbac(ns_name, "--set", "prometheus.secureMetricsPort=9120",
                              "--set", "prometheus.scrapers[0].name=scraper",
                              "--set", f"prometheus.scrapers[0].namespace={ns_name}")
            kubeconfig = identity(cluster, rbac, tmp_path / "nra.kubeconfig")
            apply(cluster, {"apiVersion": "v1", "kind": "ServiceAccount",
                            "metadata": {"name": "scraper", "namespace": ns_name}})
            kept = cluster.service_account_token(ns_name, "scraper")
            fresh = [cluster.service_account_token(ns_name, "scraper") for _ in range(args.scrapes)]
            config = tmp_path / "metallb.yaml"
            config.write_text(TWO_PEERS_V4_V6)
            health, secure = free_port(), free_port()
            daemon = Daemon("--static-file", str(config), "--netns", netns.name, "--kubeconfig", str(kubeconfig),
                            log_path=tmp_path / "nra.log",
                            env=clean_env(HEALTH_ADDRESS=f"127.0.0.1:{health}",
                                          METRICS_ADDRESS=f"127.0.0.1:{secure}", MAX_RECONCILE_WAIT="0"))
            try:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        timed(f"http://127.0.0.1:{health}/readyz", None, None)
                        break
                    except OSError:
                        if time.monotonic() > deadline or daemon.proc.poll() is not None:
                            raise RuntimeError(daemon.log()) from None
                        time.sleep(0.1)
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                https = f"https://127.0.0.1:{secure}/metrics"
                timed(https, kept, context)  # reviewed once: kept from here on
                plain = [timed(f"http://127.0.0.1:{health}/metrics", None, None) for _ in range(args.scrapes)]
                cached = [timed(https, kept, context) for _ in range(args.scrapes)]
                new = []
                for token in fresh:
                    new.append(timed(https, token, context))
                    time.sleep(0.1)  # (pacing below REVIEW_RATE, not a barrier)
            finally:
                daemon.stop()
        finally:
            netns.delete()
            cluster.down()
    print(summary("self-signed", made))
    for name, ms in (("plain", plain), ("https-kept", cached), ("https-new", new)):
        print(summary(name, ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
