#!/usr/bin/env python3
"""The nft table of the `conntrack` return path at N prefixes, in a throwaway namespace (root).

For each N: a rebuild of the whole table in one transaction (JSON through libnftables, nft
syntax through libnftables, and `nft -f` the binary), a read back (libnftables' JSON
listing, the binary's, and nra's own nf_tables dumps), a steady diff, and a one-prefix change as an element-level transaction (JSON and binary).

    .venv/bin/python benchmarks/nft_bench.py [--sizes 10000,100000]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nra.kernel import nft_table as nft  # noqa: E402
from nra.kernel.libnft import Nft  # noqa: E402
from nra.kernel.marks import parse_mark_field  # noqa: E402
from nra.kernel.nft import NftState  # noqa: E402
from testbed.netns import new_netns  # noqa: E402

FIELD = parse_mark_field("0x2/0x3e")
ROUTERS = {("eth0", "02:00:00:00:00:01"): 1, ("eth0", "02:00:00:00:00:02"): 2}


def prefixes(n: int, offset: int = 0) -> list[ipaddress.IPv4Network]:
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    return [ipaddress.ip_network(f"{ipaddress.IPv4Address(base + (i + offset) * 8)}/30") for i in range(n)]  # never adjacent: not merged


def table_text(want: nft.NftTable) -> str:
    """The same table in nft syntax (for the comparison only)."""
    cmds = nft.commands(nft.diff(want, None), want, False)
    lines = []
    for cmd in cmds:  # only element adds are large; render them natively, the rest as JSON
        add = cmd.get("add", {})
        if "element" in add and add["element"]["name"] in nft.PREFIX_SET_FAMILY:
            elems = ", ".join(e if isinstance(e, str) else "-".join(e["range"]) for e in add["element"]["elem"])
            lines.append(f"add element inet nra {add['element']['name']} {{ {elems} }}")
    return "\n".join(lines)


def timed(fn, rounds: int = 1) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def read_now(netns: str) -> nft.NftTable | None:
    """The table as nra reads it in full (nra.kernel.nft_read)."""
    owner = NftState(netns)
    try:
        return owner.read_blocking()
    finally:
        owner.close()


def measure(n: int) -> dict[str, float]:
    ns = new_netns("nra-nftbench")
    try:
        want = nft.desired_table(prefixes(n), ["eth0"], ROUTERS, FIELD)
        rebuild = nft.commands(nft.diff(want, None), want, False)
        rebuild_again = nft.commands(nft.diff(want, None), want, True)
        row = {}
        with Nft(ns.name) as lib:
            row["rebuild_json"] = timed(lambda: lib.json_cmd(rebuild))
            row["rebuild_json_again"] = timed(lambda: lib.json_cmd(rebuild_again), 3)
            # the same table with the prefix elements in nft syntax, through the library
            skeleton = [c for c in rebuild_again if not ("add" in c and "element" in c["add"]
                                                         and c["add"]["element"]["name"] in nft.PREFIX_SET_FAMILY)]
            text = table_text(want)

            def rebuild_text():
                lib.json_cmd(skeleton)
                lib.cmd(text)
            row["rebuild_text_2tx"] = timed(rebuild_text, 3)
            row["read"] = timed(lambda: lib.list_table("inet", "nra"), 3)
            current = read_now(ns.name)
            row["diff"] = timed(lambda: nft.diff(want, current), 3)
            assert not nft.diff(want, current)
            # one prefix more, then back: element-level transactions
            more = nft.desired_table(prefixes(n) + [ipaddress.ip_network("198.18.0.0/30")], ["eth0"], ROUTERS, FIELD)
            add = nft.element_commands(nft.diff(more, current))
            row["change_json"] = timed(lambda: lib.json_cmd(add))
            current2 = read_now(ns.name)
            back = nft.element_commands(nft.diff(want, current2))
            lib.json_cmd(back)
        # what nra does: the skeleton through libnftables, the prefixes as one element batch, the jumps
        owner = NftState(ns.name)
        try:
            owner.apply_blocking(nft.removal(owner.read_blocking()), None, None, owner.read_blocking())
            row["build_nra"] = timed(lambda: owner.apply_blocking(nft.diff(want, None), want, FIELD, None))
            owner.forget()
            row["read_nra"] = timed(lambda: (owner.forget(), owner.read_blocking()))
            current = owner.read_blocking()
            row["change_nra"] = timed(lambda: owner.apply_blocking(nft.diff(more, current), more, FIELD, current))
        finally:
            owner.close()
        # the binary, for the same rebuild and change
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump({"nftables": rebuild_again}, f)
            f.flush()
            row["rebuild_binary"] = timed(lambda: ns.exec(["nft", "-j", "-f", f.name]), 3)
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump({"nftables": add}, f)
            f.flush()
            row["change_binary"] = timed(lambda: ns.exec(["nft", "-j", "-f", f.name]))
        row["read_binary"] = timed(lambda: json.loads(ns.exec(["nft", "-j", "list", "table", "inet", "nra"]).stdout), 3)
        return row
    finally:
        ns.delete()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    args = parser.parse_args()
    cols = ["rebuild_json", "rebuild_json_again", "rebuild_text_2tx", "rebuild_binary", "build_nra", "read",
            "read_binary", "read_nra", "diff", "change_json", "change_binary", "change_nra"]
    print(f"{'N':>7} " + " ".join(f"{c:>10}" for c in cols) + "   (seconds)")
    for n in (int(s) for s in args.sizes.split(",")):
        row = measure(n)
        print(f"{n:>7} " + " ".join(f"{row[c]:>10.4f}" for c in cols), flush=True)
    print("rebuild_json: table created by one JSON transaction (libnftables); _again: delete+create in one "
          "transaction; rebuild_text_2tx: the prefixes in nft syntax (2 transactions, for comparison); "
          "read: libnftables' JSON listing (not parsed); read_nra: nra's read in full (its own nf_tables dumps); diff: steady diff; change: one prefix added, element-level; "
          "_nra: what nra does (an inert skeleton by libnftables, then the elements as one nf_tables batch, then the hooks' jumps as one more)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
