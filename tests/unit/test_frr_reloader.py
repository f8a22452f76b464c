"""The lab's FRR reloader (testbed/frr_reloader.py), what MetalLB's speaker in FRR mode signals:
the log file moved out of /etc/frr, and the signal protocol (pid file, SIGHUP -> one outcome in
the status file, SIGTERM -> pid file gone). Applying a configuration to running daemons is the
real-parts e2e test's (tests/e2e/test_real_parts.py); here no daemon runs, so the reload fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from testbed import frr_reloader
from tests.wait import wait_for

SPEAKER_TEXT = """log file /etc/frr/frr.log informational
log timestamp precision 3
hostname node
router bgp 64512
  no bgp default ipv4-unicast
"""


def test_the_speakers_log_file_is_moved_into_the_labs_directory(tmp_path: Path):
    text = frr_reloader.lab_copy(SPEAKER_TEXT, tmp_path)
    assert text.splitlines()[0] == f"log file {tmp_path / 'frr.log'} informational"
    assert "/etc/frr" not in text
    assert text.splitlines()[1:] == SPEAKER_TEXT.splitlines()[1:]


def test_sighup_applies_once_and_records_the_outcome_sigterm_ends(tmp_path: Path):
    pid_file, conf, frr_dir = tmp_path / "reloader.pid", tmp_path / "speaker.conf", tmp_path / "frr"
    frr_dir.mkdir()
    conf.write_text(SPEAKER_TEXT)
    proc = subprocess.Popen([sys.executable, frr_reloader.__file__, str(pid_file), str(conf), str(frr_dir)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert pid_file.read_text() == str(proc.pid)  # what MetalLB's speaker reads (no newline)
        os.kill(proc.pid, signal.SIGHUP)
        status = frr_dir / "status"
        wait_for(lambda: status.exists() and status.read_text(), 60, what="the reload's outcome")
        # no daemon answers on frr_dir's vty sockets: frr-reload.py fails, and says so
        assert status.read_text().split()[1] == "failure"
        assert (frr_dir / "frr.conf").read_text() == frr_reloader.lab_copy(SPEAKER_TEXT, frr_dir)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not pid_file.exists()
        assert len(status.read_text().splitlines()) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
