"""helm uninstall's cleanup: wait until the cleanup DaemonSet has cleaned every node.

Run by the post-delete hook Job with the nra image's Python; Helm waits for the Job, so
`helm uninstall` returns once every node is clean (or fails after the deadline, naming how
many nodes are left). Reads one DaemonSet through the Job's service account.

    python wait-for-cleanup.py NAMESPACE DAEMONSET TIMEOUT_SECONDS
"""

import json
import os
import ssl
import sys
import time
import urllib.request

SA = "/var/run/secrets/kubernetes.io/serviceaccount"


def daemonset_status(api: str, namespace: str, name: str, token: str, context) -> dict:
    request = urllib.request.Request(f"{api}/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}",
                                     headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=10, context=context) as resp:
        return json.load(resp).get("status") or {}


def cleaned(status: dict) -> bool:
    """Every node that should run a cleanup pod has a Ready one (its init container, the
    cleaning, succeeded)."""
    wanted = status.get("desiredNumberScheduled", 0)
    return wanted > 0 and status.get("numberReady", 0) >= wanted and status.get("updatedNumberScheduled", 0) >= wanted


def main(argv: list[str]) -> int:
    namespace, name, timeout = argv[0], argv[1], float(argv[2])
    api = os.environ.get("NRA_API_URL") or \
        f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}"
    token_file = os.environ.get("NRA_TOKEN_FILE", f"{SA}/token")
    context = ssl.create_default_context(cafile=f"{SA}/ca.crt") if api.startswith("https:") else None
    with open(token_file) as f:
        token = f.read().strip()
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        try:
            status = daemonset_status(api, namespace, name, token, context)
        except OSError as exc:  # the API server may blink; the deadline bounds the wait
            print(f"reading daemonset {namespace}/{name}: {exc}", file=sys.stderr)
        if cleaned(status):
            print(f"every node cleaned ({status['numberReady']} of {status['desiredNumberScheduled']})")
            return 0
        time.sleep(2)
    print(f"cleanup not finished after {timeout:g} s: {status.get('numberReady', 0)} of "
          f"{status.get('desiredNumberScheduled', '?')} nodes cleaned", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
