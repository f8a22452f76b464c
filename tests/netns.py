"""Throwaway network namespaces for tests: each one created, used and removed by its test.

Nothing here touches the root namespace's routes or links.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from dataclasses import dataclass


def sh(cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


@dataclass
class NetNS:
    name: str

    def ip(self, args: str, check: bool = True) -> str:
        """Run `ip -n <ns> <args>` and return stdout."""
        proc = subprocess.run(
            ["ip", "-n", self.name, *shlex.split(args)], capture_output=True, text=True
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"ip -n {self.name} {args}: {proc.stderr.strip()}")
        return proc.stdout

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """Run a program inside the namespace."""
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], **kw)

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def rules(self, family: str = "-4", table: int = 20) -> list[str]:
        out = self.ip(f"{family} rule show table {table}")
        return [line.strip() for line in out.splitlines() if line.strip()]

    def routes(self, family: str = "-4", table: int = 20) -> list[str]:
        out = self.ip(f"{family} route show table {table}")
        return [line.rstrip() for line in out.splitlines() if line.strip()]

    def delete(self) -> None:
        sh(f"ip netns del {self.name}", check=False)


def new_netns(prefix: str = "nra") -> NetNS:
    name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    sh(f"ip netns add {name}")
    ns = NetNS(name)
    ns.ip("link set dev lo up")
    return ns


def add_peer_link(ns: NetNS, v4_cidr: str = "10.99.0.1/24", v6_cidr: str = "fd99::1/64",
                  name: str = "eth0", peer_name: str = "eth0p") -> None:
    """A veth pair inside `ns` (both ends in it), with addresses on `name`, so that
    gateways in the same subnets are on-link. Note: always say `dev`/`name` to `ip`:
    a bare `a` is read as `address`."""
    ns.ip(f"link add name {name} type veth peer name {peer_name}")
    # Keep the IPv6 address over a link flap, as a node's network manager would restore it
    # (the kernel's default drops static IPv6 addresses on link down).
    sh(f"ip netns exec {ns.name} sysctl -qw net.ipv6.conf.{name}.keep_addr_on_down=1")
    ns.ip(f"addr add {v4_cidr} dev {name}")
    ns.ip(f"-6 addr add {v6_cidr} dev {name} nodad")
    ns.ip(f"link set dev {name} up")
    ns.ip(f"link set dev {peer_name} up")
