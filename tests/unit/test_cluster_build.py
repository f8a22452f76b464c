"""scripts/cluster where the binaries are missing and cannot be built: a clear error and a
non-zero exit, never a silent skip (the build itself is exercised by scripts/setup)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import cluster


def test_up_without_binaries_or_go_fails_naming_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture):
    monkeypatch.setattr(cluster, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(cluster, "GO_CANDIDATES", (str(tmp_path / "no-such-go"),))
    assert sorted(cluster.missing_binaries()) == ["etcd", "kube-apiserver", "kube-proxy", "kubectl",
                                                  "metallb-controller", "metallb-speaker"]
    with pytest.raises(cluster.ClusterError, match="no `go` toolchain"):
        cluster.Cluster(tmp_path / "state").up(log=lambda _m: None)
    assert cluster.main(["up", "--dir", str(tmp_path / "state")]) == 1
    err = capsys.readouterr().err
    assert "no `go` toolchain" in err and str(tmp_path / "cache") in err
    assert not (tmp_path / "state").exists(), "nothing started, nothing left"


def test_status_of_a_cluster_that_is_not_up(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert cluster.main(["status", "--dir", str(tmp_path / "state")]) == 1
    assert "not up" in capsys.readouterr().out
