"""TABLE_NAME: nra's table id named in iproute2's rt_tables.d (nra/kernel/table_names.py), in a
temporary directory (tests/kernel/test_table_names_ip.py has `ip` read it back)."""

from __future__ import annotations

import pytest

from nra.kernel.table_names import (
    FILE_NAME,
    MARK,
    TableNameError,
    check_name,
    conflicts,
    remove_table_name,
    write_table_name,
)


@pytest.fixture
def rt_tables_d(tmp_path):
    directory = tmp_path / "iproute2" / "rt_tables.d"
    directory.mkdir(parents=True)
    return directory


def test_writes_marks_and_removes_its_file(rt_tables_d):
    path = write_table_name(20, "metallb", rt_tables_d)
    assert path == rt_tables_d / FILE_NAME
    assert path.read_text() == f"{MARK}20\tmetallb\n"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    before = path.stat().st_mtime_ns
    assert write_table_name(20, "metallb", rt_tables_d) == path and path.stat().st_mtime_ns == before, \
        "unchanged content is not rewritten"
    write_table_name(120, "metallb", rt_tables_d)
    assert path.read_text().endswith("120\tmetallb\n")
    assert [p.name for p in rt_tables_d.iterdir()] == [FILE_NAME], "no temporary file left behind"
    assert remove_table_name(rt_tables_d) is True
    assert not path.exists()
    assert remove_table_name(rt_tables_d) is False


def test_not_mounted_means_nothing_to_do(tmp_path):
    assert write_table_name(20, "metallb", tmp_path / "absent") is None
    assert remove_table_name(tmp_path / "absent") is False


def test_leaves_a_file_it_did_not_write(rt_tables_d):
    theirs = rt_tables_d / FILE_NAME
    theirs.write_text("20 someone-elses\n")
    with pytest.raises(TableNameError, match="not written by nra"):
        write_table_name(20, "metallb", rt_tables_d)
    assert remove_table_name(rt_tables_d) is False
    assert theirs.read_text() == "20 someone-elses\n"


@pytest.mark.parametrize("name", ["", "20", "2x", "two words", "a#b", "main", "Local", "all", "x" * 64, "é"])
def test_refuses_names_iproute2_would_misread(name):
    with pytest.raises(TableNameError):
        check_name(name)


@pytest.mark.parametrize("name", ["metallb", "nra_return", "bgp-peers.v4", "_x", "x" * 63])
def test_accepts_names(name):
    assert check_name(f" {name} ") == name


def test_conflicts_with_other_entries(rt_tables_d):
    (rt_tables_d.parent / "rt_tables").write_text("255\tlocal\n254\tmain\n# 20 commented\n20\told-name\n")
    (rt_tables_d / "other.conf").write_text("30 metallb  # the name taken by another id\n40 fine\n")
    write_table_name(20, "metallb", rt_tables_d)
    assert conflicts(20, "metallb", rt_tables_d) == [
        f"{rt_tables_d.parent / 'rt_tables'}:4: 20 old-name",
        f"{rt_tables_d / 'other.conf'}:1: 30 metallb",
    ]
    assert conflicts(21, "unique", rt_tables_d) == []
