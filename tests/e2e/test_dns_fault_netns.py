"""dns-fault's agent script, run as the agent runs it, in a network and mount namespace made with ``unshare``.

Inside: loopback up with a second address (10.99.0.1) where tests/support/dns_server.py answers on port 53, a
resolv.conf naming it bound over /etc/resolv.conf, and the agent's programs under a tmpfs /opt. The lookups go
through glibc (``getent hosts``), as a pod's would. Nothing leaves the namespace.

Needs root, nftables and Debian's python3 with python3-dnslib (hack/system-packages installs them).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from coordinator.faults.inpod import agent_script
from coordinator.faults.inpod.dns import PROGRAM, DnsFault
from coordinator.faults.inpod.programs import dns_fault as program
from support.cluster import REPO_ROOT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network and mount namespaces need root")
PYTHON = "/usr/bin/python3"  # Debian's, as in the agent image: python3-dnslib is installed for it
UPSTREAM = "10.99.0.1"

# $1: the work directory. Prints one JSON line per lookup round: {"phase", "web.test", "api.example.com"}.
SETUP = r"""
set -eu
work=$1
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
ip link set lo up
ip addr add {upstream}/32 dev lo
mount --bind "$work/resolv.conf" /etc/resolv.conf
mount -t tmpfs tmpfs /opt
mkdir -p {programs}
cp "$work/dns_fault.py" {programs}/
python3 "$work/dns_server.py" --listen {upstream} --port 53 --record web.test=10.1.2.3 \
  --record api.example.com=10.1.2.4 > "$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null' EXIT  # it would otherwise outlive this shell, and keep the namespace
lookups() {{
  if web=$(getent hosts web.test); then web=${{web%% *}}; else web=failed; fi
  if api=$(getent hosts api.example.com); then api=${{api%% *}}; else api=failed; fi
  printf '{{"phase": "%s", "web.test": "%s", "api.example.com": "%s"}}\n' "$1" "$web" "$api"
}}
tries=0
until getent hosts web.test >/dev/null; do tries=$((tries + 1)); [ $tries -lt 50 ] || exit 9; sleep 0.1; done
lookups before
"""


def run_in_namespace(tmp_path: Path, body: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    (tmp_path / "resolv.conf").write_text(f"nameserver {UPSTREAM}\noptions timeout:1 attempts:1\n")
    shutil.copy(program.__file__, tmp_path / "dns_fault.py")
    shutil.copy(REPO_ROOT / "tests" / "support" / "dns_server.py", tmp_path / "dns_server.py")
    script = SETUP.format(upstream=UPSTREAM, programs=shlex.quote(str(Path(PROGRAM).parent))) + body
    return subprocess.run(
        ["unshare", "--net", "--mount", "sh", "-c", script, "sh", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def rounds(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    found = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {r.pop("phase"): r for r in found}


def write_agent(tmp_path: Path, name: str, fault: DnsFault, seconds: int, fault_id: str) -> None:
    (tmp_path / name).write_text(agent_script(fault, seconds, fault_id=fault_id))


@pytest.fixture(autouse=True)
def _debian_python() -> None:
    probe = subprocess.run([PYTHON, "-c", "import dnslib"], capture_output=True, check=False)
    assert probe.returncode == 0, "hack/system-packages installs python3-dnslib for Debian's python3"
    missing = [tool for tool in ("nft", "unshare", "getent") if shutil.which(tool) is None]
    assert not missing, f"missing {', '.join(missing)}"


def test_the_agent_fails_matched_names_forwards_others_and_removes_everything(tmp_path: Path) -> None:
    write_agent(tmp_path, "agent.sh", DnsFault(("*.EXAMPLE.com",), "error"), 4, "dnstest1")
    proc = run_in_namespace(
        tmp_path,
        r"""
sh "$work/agent.sh" 2> "$work/agent.log" &
agent=$!
tries=0
until grep -q 'coordinator-agent: holding' "$work/agent.log"; do
  tries=$((tries + 1)); [ $tries -lt 100 ] || exit 8; sleep 0.1
done
lookups during
nft list tables
rc=0; wait $agent || rc=$?; echo "agent exit $rc"
nft list tables
lookups after
""",
    )
    log = (tmp_path / "agent.log").read_text()
    assert proc.returncode == 0, proc.stderr + proc.stdout + log
    seen = rounds(proc)
    normal = {"web.test": "10.1.2.3", "api.example.com": "10.1.2.4"}
    assert seen["before"] == normal
    assert seen["during"] == {"web.test": "10.1.2.3", "api.example.com": "failed"}
    assert seen["after"] == normal
    assert "agent exit 0" in proc.stdout
    assert proc.stdout.count("table inet coordinator_dnstest1") == 1, "present while held, gone after"
    assert "dns-fault: matched api.example.com" in log
    assert "reverted: nft delete table inet coordinator_dnstest1" in log
    assert log.index("applied: python3") < log.index("coordinator-agent: holding")


def test_sigterm_mid_hold_reverts_and_a_second_dns_fault_is_refused_by_its_check(tmp_path: Path) -> None:
    write_agent(tmp_path, "first.sh", DnsFault(("api.example.com",), "random"), 60, "dnsfirst")
    write_agent(tmp_path, "second.sh", DnsFault(("web.test",), "error"), 60, "dnssecond")
    proc = run_in_namespace(
        tmp_path,
        r"""
sh "$work/first.sh" 2> "$work/first.log" &
first=$!
tries=0
until grep -q 'coordinator-agent: holding' "$work/first.log"; do
  tries=$((tries + 1)); [ $tries -lt 100 ] || exit 8; sleep 0.1
done
lookups during
rc=0; sh "$work/second.sh" 2> "$work/second.log" || rc=$?; echo "second exit $rc"
kill -TERM $first
rc=0; wait $first || rc=$?; echo "first exit $rc"
nft list tables; echo "tables listed"
lookups after
""",
        timeout=90,
    )
    first, second = (tmp_path / "first.log").read_text(), (tmp_path / "second.log").read_text()
    assert proc.returncode == 0, proc.stderr + proc.stdout + first + second
    seen = rounds(proc)
    assert seen["during"]["web.test"] == "10.1.2.3"
    assert seen["during"]["api.example.com"].startswith(("192.0.2.", "198.51.100.", "203.0.113.", "2001:db8:")), seen
    assert "second exit 2" in proc.stdout
    refused = (
        "dns-fault not applied: another dns-fault already redirects this pod's DNS (table inet coordinator_dnsfirst)"
    )
    assert refused in second
    assert "nft add table" not in second, "refused before it touched anything"
    assert "first exit 143" in proc.stdout
    assert "reverted: nft delete table inet coordinator_dnsfirst" in first
    assert "coordinator_" not in proc.stdout.split("tables listed")[0].split("first exit")[1]
    assert seen["after"] == {"web.test": "10.1.2.3", "api.example.com": "10.1.2.4"}
