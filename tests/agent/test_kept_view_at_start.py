"""The daemon's first read of the rules is kept (nra.kernel.rules.KeptRules): the first
reconcile waits until the kernel's notifications are listened to, so the first change
after a start does not dump every rule again (at 100,000 rules: ~1 s, and a peak of RSS)."""

from __future__ import annotations

import asyncio

import pytest

from nra.daemon.agent import Agent
from nra.kernel.rules import KeptRules
from nra.settings import Settings
from nra.sources.static_file import StaticFileSource
from tests.agent.helpers import TWO_PEERS_V4_V6
from tests.netns import NetNS
from tests.wait import wait_for_async

pytestmark = pytest.mark.kernel


async def test_the_first_change_after_a_start_reads_no_rule_dump(node_ns: NetNS, tmp_path, monkeypatch):
    full_reads: list[int | None] = []
    started = KeptRules.full_read_started

    def counted(self):
        answer = started(self)
        full_reads.append(answer)
        return answer

    monkeypatch.setattr(KeptRules, "full_read_started", counted)  # (a spy: the real read goes on)
    config = tmp_path / "metallb.yaml"
    config.write_text(TWO_PEERS_V4_V6)
    settings = Settings(NRA_NETNS=node_ns.name, HEALTH_ADDRESS="off", MAX_RECONCILE_WAIT=0,
                        METALLB_STATIC_FILE=str(config))
    agent = Agent(settings, StaticFileSource(str(config), None, 100))
    running = asyncio.create_task(agent.run())
    try:
        await wait_for_async(lambda: agent.last_outcome is not None and agent.last_outcome.ok,
                             what="the first reconcile")
        assert len(full_reads) == 1 and full_reads[0] is not None, "the first read was not listened to"
        config.write_text(TWO_PEERS_V4_V6.replace("198.51.100.0/26,", "198.51.100.0/26, 203.0.113.0/24,"))
        await wait_for_async(lambda: any("203.0.113.0/24" in r for r in node_ns.rules("-4", 20)),
                             what="the new prefix's rule")
        assert len(full_reads) == 1, "the first change after the start dumped every rule again"
    finally:
        agent.stop()
        assert await asyncio.wait_for(running, 10) == 0
