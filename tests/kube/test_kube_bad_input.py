"""The Kubernetes sources against bad objects and API faults (issue 11, items 13 and 14, and
"what must be true"): a malformed object, a wrong-typed field, a 10 MB ConfigMap, objects
deleted and re-created under the same name, paginated lists, the backoff after errors, and
this node's Node object going away. Each is one line in the log, and the last good state is
kept unless the configuration genuinely changed."""

from __future__ import annotations

import contextlib
import copy

from loguru import logger

from nra.observe import metrics
from nra.sources.kube.reflector import WatchTiming
from tests.kube.apiserver import FakeApiServer
from tests.kube.conftest import COALESCE_S, Recorder, running
from tests.kube.test_sources import (
    NS,
    addresses,
    cm_source,
    configmap,
    crd_source,
    node,
    peer,
    settle,
)
from tests.wait import wait_for_async

POOL = {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "pool", "namespace": NS},
        "spec": {"addresses": ["192.0.2.0/24"]}}
ADVERT = {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
          "metadata": {"name": "adv", "namespace": NS}, "spec": {}}
GOOD_CM = "peers: [{peer-address: 10.0.0.1}]\naddress-pools: [{name: a, protocol: bgp, addresses: [192.0.2.0/24]}]\n"


@contextlib.contextmanager
def captured_log():
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO", format="{level} {message}")
    try:
        yield lines
    finally:
        logger.remove(sink)


@contextlib.asynccontextmanager
async def good_configmap_source(apiserver: FakeApiServer, factory, recorder: Recorder):
    """A ConfigMap source running on GOOD_CM: yields (source, first result, log lines)."""
    apiserver.put(node({}), configmap(GOOD_CM))
    source = cm_source(factory)
    with captured_log() as lines:
        async with running(source, recorder):
            yield source, await recorder.wait_for(lambda r: True), lines


def refused() -> float:
    return metrics.CONFIG_REFUSED._value.get()


async def test_paginated_list_is_followed_to_the_end(apiserver: FakeApiServer, factory, recorder: Recorder):
    peers = [peer(f"p{i:02}", f"10.0.1.{i}") for i in range(1, 31)]
    apiserver.put(node({}), *peers, POOL, ADVERT)
    apiserver.page_size = 7  # 30 peers come in 5 pages
    async with running(crd_source(factory), recorder):
        await recorder.wait_count(1)
        await settle()
    assert addresses(recorder.last.intent) == {f"10.0.1.{i}" for i in range(1, 31)}
    assert len(recorder.results) == 1, "a first page was published as if it were the whole list"
    pages = [q for v, path, q in apiserver.requests if v == "list" and "bgppeers" in path]
    assert [q.get("continue") for q in pages] == [None, "7", "14", "21", "28"]
    # the first page from the watch cache (resourceVersion=0); the tokens hold the version
    assert [q.get("resourceVersion") for q in pages] == ["0", None, None, None, None]


async def test_backoff_is_reset_by_a_watch_that_opens(tmp_path, corpus=None):
    # No bookmarks and no events: only the opening of the watch can reset the backoff.
    server = FakeApiServer(bookmark_interval_s=60)
    await server.start()
    try:
        from nra.sources.kube import api_client_factory

        factory = api_client_factory(str(server.write_kubeconfig(tmp_path / "kc")))
        server.put(node({}), peer("p", "10.0.0.1"), POOL, ADVERT)
        server.fail_next(8, "json500", match="bgppeers", verb="watch")
        recorder = Recorder()
        slow = WatchTiming(backoff_min_s=0.01, backoff_max_s=0.05, stall_timeout_s=30, watch_timeout_s=30,
                           request_timeout_s=2.0)
        source = crd_source(factory)
        source.timing = slow
        async with running(source, recorder):
            await recorder.wait_count(1)
            reflector = next(r for r in source.reflectors if r.resource.name == "bgppeers")
            # ten errors later, an open watch resets the backoff
            await wait_for_async(lambda: server.open_streams("bgppeers") and reflector._backoff.attempt == 0,
                                 what="an open watch with its backoff reset")
    finally:
        await server.stop()


async def test_node_missing_is_said_each_time_with_recovery(apiserver: FakeApiServer, factory, recorder: Recorder):
    apiserver.put(node({"zone": "a"}), peer("p", "10.0.0.1"), POOL, ADVERT)
    source = crd_source(factory)
    with captured_log() as lines:
        async with running(source, recorder):
            await recorder.wait_count(1)
            for _ in range(3):
                apiserver.delete("Node", "node-a")
                await settle()
                assert "node node-a not found" in (source.problem or "")
                apiserver.put(node({"zone": "a"}))
                await settle()
                assert source.problem is None
    said = [line for line in lines if "node node-a not found" in line]
    found = [line for line in lines if "node node-a found" in line]
    assert len(said) == 3 and len(found) == 3, lines
    assert len(recorder.results) == 1, "the Node's absence changed the published state"


async def test_malformed_object_refuses_the_configuration_and_keeps_the_last(apiserver: FakeApiServer, factory,
                                                                              recorder: Recorder):
    apiserver.put(node({}), peer("p", "10.0.0.1"), peer("q", "10.0.0.2"), POOL, ADVERT)
    source = crd_source(factory)
    with captured_log() as lines:
        async with running(source, recorder):
            first = await recorder.wait_for(lambda r: True)
            broken = copy.deepcopy(peer("q", "10.0.0.2"))
            broken["spec"] = ["not", "a", "mapping"]  # the API's schema would refuse it; a stand-in does not
            apiserver.put(broken)
            await settle()
            assert recorder.last == first and refused() == 1
            assert "type: BGPPeer q has a spec that is a list" in source.problem
            apiserver.put(peer("q", "10.0.0.3"))
            await recorder.wait_for(lambda r: addresses(r.intent) == {"10.0.0.1", "10.0.0.3"})
            assert source.problem is None and refused() == 0
    assert sum("has a spec that is a list" in line for line in lines) == 1, lines


async def test_wrong_typed_field_skips_that_entry_only(apiserver: FakeApiServer, factory, recorder: Recorder):
    apiserver.put(node({}), peer("p", "10.0.0.1"), POOL, ADVERT)
    async with running(crd_source(factory), recorder):
        await recorder.wait_count(1)
        bad = peer("q", "10.0.0.2")
        bad["spec"]["peerAddress"] = {"ip": "10.0.0.2"}
        apiserver.put(bad)
        await recorder.wait_for(lambda r: any(p.where == "peer q" for p in r.problems))
    assert addresses(recorder.last.intent) == {"10.0.0.1"}
    assert [str(p) for p in recorder.last.problems] == [
        "peer q: peerAddress {'ip': '10.0.0.2'} is not an IP address; peer skipped"]


async def test_ten_megabyte_configmap_is_refused_in_one_line(apiserver: FakeApiServer, factory, recorder: Recorder):
    async with good_configmap_source(apiserver, factory, recorder) as (source, first, lines):
        apiserver.put(configmap(GOOD_CM + "#" + "x" * 10_000_000 + "\n"))
        # (reading 10 MB takes a while on a busy machine: wait for the refusal, not a fixed time)
        await wait_for_async(lambda: refused() == 1, timeout=20, what="the 10 MB ConfigMap refused")
        await settle()
        assert recorder.last == first and refused() == 1
        assert "refused, size: 10,000," in source.problem
    line = next(line for line in lines if "refused, size" in line)
    assert len(line) < 300


async def test_configmap_deleted_and_recreated_keeps_the_state(apiserver: FakeApiServer, factory, recorder: Recorder):
    async with good_configmap_source(apiserver, factory, recorder) as (source, first, lines):
        apiserver.delete("ConfigMap", "config", NS)
        await wait_for_async(lambda: metrics.CONFIG_MISSING._value.get() == 1, what="the ConfigMap missed")
        apiserver.put(configmap(GOOD_CM))
        await settle()
        assert source.problem is None and metrics.CONFIG_MISSING._value.get() == 0
    assert recorder.results == [first], "the deletion published a state"
    assert sum("configuration missing" in line for line in lines) == 1
    assert sum("configuration present again" in line for line in lines) == 1


async def test_object_deleted_and_recreated_at_once_changes_nothing(apiserver: FakeApiServer, factory,
                                                                    recorder: Recorder):
    apiserver.put(node({}), peer("p", "10.0.0.1"), peer("q", "10.0.0.2"), POOL, ADVERT)
    async with running(crd_source(factory), recorder):
        await recorder.wait_count(1)
        apiserver.delete("BGPPeer", "q", NS)
        apiserver.put(peer("q", "10.0.0.2"))  # same name, new object, within the coalescing delay
        await settle()
    assert len(recorder.results) == 1 and addresses(recorder.last.intent) == {"10.0.0.1", "10.0.0.2"}


async def test_a_compute_bug_is_logged_with_its_traceback_and_counted(apiserver: FakeApiServer, factory,
                                                                       recorder: Recorder, monkeypatch):
    from nra.sources.kube import crds

    apiserver.put(node({}), peer("p", "10.0.0.1"), POOL, ADVERT)
    source = crd_source(factory)
    before = metrics.UNEXPECTED_ERRORS.labels("source")._value.get()
    with captured_log() as lines:
        async with running(source, recorder):
            first = await recorder.wait_for(lambda r: True)
            monkeypatch.setattr(crds, "parse_objects", lambda *_: {}["bug"])  # a KeyError inside the parser
            apiserver.put(peer("q", "10.0.0.2"))
            await settle()
            assert "a bug in nra" in source.problem
    assert recorder.results == [first]
    assert metrics.UNEXPECTED_ERRORS.labels("source")._value.get() == before + 1
    assert any("Traceback" in line and "KeyError" in line for line in lines)
