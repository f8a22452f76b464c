"""TABLE_NAME read back by the real `ip`: nra.kernel.table_names writes into a temporary
rt_tables.d, bind-mounted over /etc/iproute2/rt_tables.d in a private mount namespace for
that one `ip` (the host's file is never written)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from nra.kernel.table_names import remove_table_name, write_table_name


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) missing")
def test_ip_shows_the_name(node_ns, tmp_path):
    rt_tables_d = tmp_path / "rt_tables.d"
    rt_tables_d.mkdir()
    node_ns.ip("rule add from 198.51.100.0/26 lookup 20 priority 20")

    def ip_rules() -> str:
        # A private mount namespace: the bind mount is seen by this `ip` only.
        done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                               f'mount --bind "{rt_tables_d}" /etc/iproute2/rt_tables.d && '
                               f"ip -n {node_ns.name} rule show priority 20"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "lookup 20" in ip_rules()
    write_table_name(20, "metallb", rt_tables_d)
    assert "from 198.51.100.0/26 lookup metallb" in ip_rules()
    remove_table_name(rt_tables_d)
    assert "lookup 20" in ip_rules()


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) missing")
def test_oneshot_names_the_table_and_clean_and_exit_removes_the_name(node_ns, tmp_path):
    """The CLI end to end, in a private mount namespace whose /etc/iproute2/rt_tables.d is a
    temporary directory: ONESHOT with TABLE_NAME writes the name (ip rule shows it), a bad
    name is refused at start, CLEANANDEXIT removes the file with the rules."""
    from tests.agent.helpers import NRA, REPO, TWO_PEERS_V4_V6, clean_env

    rt_tables_d = tmp_path / "rt_tables.d"
    rt_tables_d.mkdir()
    config = tmp_path / "metallb.yaml"
    config.write_text(TWO_PEERS_V4_V6)

    def in_mount_ns(command: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                               f'mount --bind "{rt_tables_d}" /etc/iproute2/rt_tables.d && {command}'],
                              capture_output=True, text=True, timeout=60, cwd=REPO, env=clean_env(**env))

    nra = " ".join(NRA)
    done = in_mount_ns(f"{nra} --oneshot --static-file {config} --netns {node_ns.name} && "
                       f"ip -n {node_ns.name} rule show priority 20", TABLE_NAME="metallb")
    assert done.returncode == 0, done.stderr
    assert "from 198.51.100.0/26 lookup metallb" in done.stdout
    assert (rt_tables_d / "nra.conf").read_text().splitlines()[1] == "20\tmetallb"

    refused = in_mount_ns(f"{nra} --oneshot --static-file {config} --netns {node_ns.name}", TABLE_NAME="main")
    assert refused.returncode == 2 and "TABLE_NAME" in refused.stderr, refused.stderr

    done = in_mount_ns(f"{nra} --clean-and-exit --netns {node_ns.name}")
    assert done.returncode == 0, done.stderr
    assert not (rt_tables_d / "nra.conf").exists()
    assert node_ns.rules("-4") == []
