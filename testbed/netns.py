"""Throwaway network namespaces: each one created, used and removed by its user.

Nothing here touches the root namespace's routes or links. The tests, the benchmarks and
the lab all make their namespaces with this module.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from dataclasses import dataclass


class NetnsError(RuntimeError):
    """A command run for a namespace failed; the message names it and says why."""


def run(argv: list[str], check: bool = True, timeout: float = 20, **kw) -> subprocess.CompletedProcess:
    """Run a program (text mode, output captured); with `check`, a failure raises
    NetnsError naming the command and its error output."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def sh(cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    """A shell command line (for pipes and redirections in tests)."""
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


@dataclass
class NetNS:
    name: str

    def ip(self, args: str, check: bool = True) -> str:
        """Run `ip -n <ns> <args>` and return stdout."""
        return run(["ip", "-n", self.name, *shlex.split(args)], check=check).stdout

    def exec(self, argv: list[str], check: bool = True, timeout: float = 20, **kw) -> subprocess.CompletedProcess:
        """Run a program inside the namespace (output captured)."""
        return run(self.exec_prefix() + list(argv), check=check, timeout=timeout, **kw)

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """Run a program inside the namespace, subprocess.run's keywords as given."""
        return subprocess.run(self.exec_prefix() + list(argv), **kw)

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def sysctl(self, **values) -> None:
        """`sysctl -w` in the namespace; `__` in a keyword stands for `/` (interface names)."""
        self.exec(["sysctl", "-qw", *(f"{k.replace('__', '/')}={v}" for k, v in values.items())])

    def nft(self, script: str, check: bool = True) -> subprocess.CompletedProcess:
        """Feed an nftables script to `nft -f -` in the namespace."""
        return run(self.exec_prefix() + ["nft", "-f", "-"], check=check, input=script)

    def rules(self, family: str = "-4", table: int = 20) -> list[str]:
        out = self.ip(f"{family} rule show table {table}")
        return [line.strip() for line in out.splitlines() if line.strip()]

    def routes(self, family: str = "-4", table: int = 20) -> list[str]:
        out = self.ip(f"{family} route show table {table}")
        return [line.rstrip() for line in out.splitlines() if line.strip()]

    def delete(self) -> None:
        run(["ip", "netns", "del", self.name], check=False)

    def __enter__(self) -> "NetNS":
        return self

    def __exit__(self, *exc) -> None:
        self.delete()


def create_netns(name: str) -> NetNS:
    """Create the namespace `name` with lo up (fails if it exists)."""
    run(["ip", "netns", "add", name])
    ns = NetNS(name)
    ns.ip("link set dev lo up")
    return ns


def new_netns(prefix: str = "nra") -> NetNS:
    """A fresh namespace with a unique name (prefix, pid, random tail), lo up."""
    return create_netns(f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}")


def list_netns() -> list[str]:
    out = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def add_peer_link(ns: NetNS, v4_cidr: str | None = "10.99.0.1/24", v6_cidr: str | None = "fd99::1/64",
                  name: str = "eth0", peer_name: str = "eth0p") -> None:
    """A veth pair inside `ns` (both ends in it), with addresses on `name`, so that
    gateways in the same subnets are on-link. Note: always say `dev`/`name` to `ip`:
    a bare `a` is read as `address`."""
    ns.ip(f"link add name {name} type veth peer name {peer_name}")
    # Keep the IPv6 address over a link flap, as a node's network manager would restore it
    # (the kernel's default drops static IPv6 addresses on link down).
    ns.sysctl(**{f"net.ipv6.conf.{name}.keep_addr_on_down": 1})
    if v4_cidr:
        ns.ip(f"addr add {v4_cidr} dev {name}")
    if v6_cidr:
        ns.ip(f"-6 addr add {v6_cidr} dev {name} nodad")
    ns.ip(f"link set dev {name} up")
    ns.ip(f"link set dev {peer_name} up")


def add_veth(a: NetNS, a_name: str, b: NetNS, b_name: str) -> None:
    """A veth pair between two namespaces, both ends up (no addresses)."""
    a.ip(f"link add name {a_name} type veth peer name {b_name} netns {b.name}")
    a.ip(f"link set dev {a_name} up")
    b.ip(f"link set dev {b_name} up")
