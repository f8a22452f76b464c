"""The lab's FRR reloader: what MetalLB's speaker in FRR mode signals after it writes frr.conf.

MetalLB's speaker (METALLB_BGP_TYPE=frr) renders its whole BGP configuration as one FRR
configuration file (FRR_CONFIG_FILE), then reads a pid from FRR_RELOADER_PID_FILE and sends
that process SIGHUP. In a MetalLB pod the process is a shell script in a container beside FRR's;
in the lab it is this one, run in the node namespace beside the lab's zebra and bgpd.

    python3 testbed/frr_reloader.py PID_FILE SPEAKER_CONF FRR_DIR

writes its pid to PID_FILE, prints `ready`, then on each SIGHUP (signals that arrive during a
reload are taken once, after it) applies SPEAKER_CONF to the daemons whose vty sockets are in
FRR_DIR with FRR's own frr-reload.py (`--test`, then `--reload`), and appends
`<unix time> success|failure` to FRR_DIR/status. SIGTERM or SIGINT: it removes PID_FILE and exits.

One change to the speaker's text on the way: its `log file /etc/frr/frr.log` (a path fixed in
MetalLB's template) names FRR_DIR/frr.log instead, so that no daemon writes the host's /etc/frr.
frr-reload.py is given FRR_DIR as its configuration and temporary directory, and the applied
copy is FRR_DIR/frr.conf: it then has nothing to `write` (it writes only when the file it
applied is not <confdir>/frr.conf), and vtysh reads FRR_DIR/vtysh.conf, not /etc/frr's.

Standard library only, like the rest of the test bed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

FRR_RELOAD = "/usr/lib/frr/frr-reload.py"
VTYSH_DIR = "/usr/bin"
WAITED = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}


def lab_copy(speaker_text: str, frr_dir: Path) -> str:
    """The speaker's configuration with its log file moved into `frr_dir`."""
    return re.sub(r"^log file \S+", f"log file {frr_dir / 'frr.log'}", speaker_text, flags=re.MULTILINE)


def reload(speaker_conf: Path, frr_dir: Path) -> bool:
    """Apply the speaker's configuration; True if frr-reload.py took it."""
    target = frr_dir / "frr.conf"
    target.write_text(lab_copy(speaker_conf.read_text(), frr_dir))
    common = ["--stdout", "--confdir", str(frr_dir), "--rundir", str(frr_dir), "--vty_socket", str(frr_dir),
              "--bindir", VTYSH_DIR, str(target)]
    for step in ("--test", "--reload"):
        started = time.monotonic()
        proc = subprocess.run([sys.executable, FRR_RELOAD, step, *common], capture_output=True, text=True,
                              timeout=60)
        print(f"frr-reload.py {step}: rc {proc.returncode} in {time.monotonic() - started:.1f} s\n"
              f"{proc.stdout}{proc.stderr}", flush=True)
        if proc.returncode != 0:
            return False
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    pid_file, speaker_conf, frr_dir = Path(argv[0]), Path(argv[1]), Path(argv[2])
    signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)  # taken by sigwait only, never lost in between
    pid_file.write_text(str(os.getpid()))  # MetalLB reads it with no newline expected
    print("ready", flush=True)
    try:
        while signal.sigwait(WAITED) == signal.SIGHUP:
            print(f"SIGHUP: applying {speaker_conf}", flush=True)
            try:
                ok = reload(speaker_conf, frr_dir)
            except (OSError, subprocess.SubprocessError) as exc:
                print(f"reload failed: {exc}", flush=True)
                ok = False
            with open(frr_dir / "status", "a") as status:
                status.write(f"{int(time.time())} {'success' if ok else 'failure'}\n")
            print(f"reload {'success' if ok else 'failure'}", flush=True)
    finally:
        pid_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
