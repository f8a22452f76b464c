"""TABLE_NAME read back by the real `ip`: nra.table_names writes into a temporary
rt_tables.d, bind-mounted over /etc/iproute2/rt_tables.d in a private mount namespace for
that one `ip` (the host's file is never written)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from nra.table_names import remove_table_name, write_table_name


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
