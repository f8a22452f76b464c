"""The reflector's waits are spread (jitter), so agents cut at the same moment (an API server
restart) do not come back at the same moment: each wait is uniform over its whole range."""

from __future__ import annotations

import random
import statistics

from nra.sources.kube.reflector import Backoff, Reflector, ResourceKind, WatchTiming

SAMPLES = 4000


def assert_uniform(delays: list[float], low: float, high: float) -> None:
    assert low <= min(delays) and max(delays) <= high
    width = high - low
    quartiles = statistics.quantiles(delays, n=4)
    for k, got in enumerate(quartiles, start=1):
        assert abs(got - (low + width * k / 4)) < 0.05 * width, (quartiles, low, high)


def test_every_backoff_attempt_is_spread_over_its_range():
    backoff = Backoff(0.2, 10.0, rng=random.Random(7))
    for attempt in range(9):
        ceiling = min(10.0, 0.2 * 2 ** (attempt + 1))
        delays = []
        for _ in range(SAMPLES):
            backoff.attempt = attempt
            delays.append(backoff.next_delay())
        assert_uniform(delays, 0.2, ceiling)
    backoff.reset()
    assert backoff.attempt == 0 and 0.2 <= backoff.next_delay() <= 0.4


def test_relist_after_410_waits_full_jitter_bounded_by_the_setting():
    kind = ResourceKind("bgppeers", "/apis/metallb.io/v1beta2/namespaces/x/bgppeers", "metallb.io/v1beta2", "BGPPeer")
    reflector = Reflector(None, kind, lambda: None, WatchTiming(relist_jitter_s=1.5))  # type: ignore[arg-type]
    reflector._rng.seed(11)
    assert_uniform([reflector.relist_delay() for _ in range(SAMPLES)], 0.0, 1.5)
    # 500 agents refused together: no tenth of the window holds more than twice its share
    agents = [Reflector(None, kind, lambda: None, WatchTiming(relist_jitter_s=1.5))  # type: ignore[arg-type]
              for _ in range(500)]
    bins = [0] * 10
    for agent in agents:
        bins[min(9, int(agent.relist_delay() / 0.15))] += 1
    assert max(bins) <= 2 * 500 / 10, bins
    off = Reflector(None, kind, lambda: None, WatchTiming(relist_jitter_s=0.0))  # type: ignore[arg-type]
    assert off.relist_delay() == 0.0
