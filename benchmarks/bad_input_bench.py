"""Time and memory of the configuration path on hostile inputs (issue 11), one fresh process
per input so peak RSS is that input's.

Usage: .venv/bin/python benchmarks/bad_input_bench.py
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.unit.test_bad_config import alias_bomb  # noqa: E402

CHILD = r"""
import json, resource, sys, time
import yaml
from nra.config.metallb import ConfigError, parse_static_document
text = sys.stdin.read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
try:
    result = parse_static_document(text, "node-a", 100)
    outcome = f"{len(result.intent.prefixes)} prefixes, {len(result.problems)} problems"
except ConfigError as exc:
    outcome = str(exc)
took = time.perf_counter() - started
if sys.argv[1] == "plain":  # the same text through libyaml alone, for the scan's cost
    started = time.perf_counter()
    yaml.load(text, Loader=yaml.CSafeLoader)
    outcome += f"; libyaml alone {1000 * (time.perf_counter() - started):.1f} ms"
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"ms": 1000 * took, "rss_mb": peak / 1024, "grew_mb": (peak - before) / 1024, "outcome": outcome}))
"""


def ten_thousand_prefixes() -> str:
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    lines = ["peers:", "- peer-address: 10.99.0.2", "address-pools:", "- name: b", "  protocol: bgp", "  addresses:"]
    return "\n".join(lines + [f"  - {ipaddress.IPv4Address(base + 4 * i)}/30" for i in range(10_000)]) + "\n"


INPUTS = {
    "alias bomb (433 B)": alias_bomb(),
    "nesting 100,000 deep": "peers: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "600,000-node flow list": "address-pools: [{name: a, protocol: bgp, addresses: [" + ",".join(["1"] * 600_000) + "]}]\n",
    "5 MiB file": "peers: []\n# " + "x" * (5 * 1024 * 1024) + "\n",
    "10,000 prefixes (good)": ten_thousand_prefixes(),
}

if __name__ == "__main__":
    print(f"| input | bytes | time | peak RSS (grew) | outcome |\n|---|---|---|---|---|")
    for name, text in INPUTS.items():
        mode = "plain" if "good" in name else "bounded"
        out = subprocess.run([sys.executable, "-c", CHILD, mode], input=text, capture_output=True, text=True,
                             cwd=REPO, timeout=300)
        if out.returncode != 0:
            print(f"| {name} | {len(text):,} | exit {out.returncode} | | {out.stderr.strip()[-200:]} |")
            continue
        r = json.loads(out.stdout)
        print(f"| {name} | {len(text):,} | {r['ms']:.1f} ms | {r['rss_mb']:.0f} MB (+{r['grew_mb']:.1f}) | "
              f"{r['outcome'][:110]} |")
