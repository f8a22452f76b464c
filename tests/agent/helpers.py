from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NRA = [sys.executable, "-m", "nra"]

TWO_PEERS_V4_V6 = """\
peers:
- peer-address: 10.99.0.2
- peer-address: 10.99.0.3
- peer-address: fd99::2
address-pools:
- name: pool-a
  protocol: bgp
  addresses: [198.51.100.0/26, 198.51.100.100-198.51.100.103]
- name: pool-v6
  protocol: bgp
  addresses: [2001:db8:100::/120]
- name: l2
  protocol: layer2
  addresses: [192.0.2.0/28]
"""


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any nra setting of the caller's, plus `extra`."""
    from nra.settings import ENV_NAMES  # every setting, so none of the caller's leaks in

    env = {k: v for k, v in os.environ.items() if k not in {*ENV_NAMES.values(), "TABLE"}}
    env["HEALTH_ADDRESS"] = "off"
    env.update(extra)
    return env


def run_nra(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*NRA, *args], cwd=REPO, env=env or clean_env(), capture_output=True,
                          text=True, timeout=timeout)


def http_status(port: int, path: str, timeout: float = 2.0) -> int:
    """The HTTP status of GET http://127.0.0.1:<port><path>; 0 when nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


class Daemon:
    """nra running as a daemon subprocess; its log is collected to a file."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen([*NRA, *args], cwd=REPO, env=env or clean_env(),
                                     stdout=self._log, stderr=subprocess.STDOUT, text=True)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
