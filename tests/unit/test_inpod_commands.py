"""The exact command lines of the in-pod faults, their validation, and the shape of the agent script.

The real effect of these same lines is measured in tests/e2e/test_inpod_netns.py.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable

import pytest

from coordinator.faults.inpod import (
    ContainerKill,
    CpuStress,
    InPodFault,
    IoStress,
    MemoryStress,
    NetworkBandwidth,
    NetworkCorrupt,
    NetworkDelay,
    NetworkDuplicate,
    NetworkLoss,
    NetworkPartition,
    TrafficScope,
    agent_command,
    agent_script,
    apply_commands,
    build_commands,
    fault_id_for,
    hold_command,
    revert_commands,
)
from coordinator.faults.inpod.agent import revert_agent_command, revert_script
from coordinator.faults.inpod.commands import container_kill_script, rate_bits_per_second, tc_handle

FID = "f1"
HANDLE = "1cdc:"  # tc_handle("f1"): pinned, so a change to the derivation is a visible decision
TC_REVERT = f"tc qdisc del dev eth0 root handle {HANDLE}"
NFT_REVERT = "nft delete table inet coordinator_f1"


def lines(commands: list[list[str]]) -> list[str]:
    return [shlex.join(argv) for argv in commands]


def test_tc_handle_is_stable_and_clear_of_kernel_handles() -> None:
    assert tc_handle(FID) == HANDLE
    majors = {int(tc_handle(f"id{i}").rstrip(":"), 16) for i in range(500)}
    assert all(0x1000 <= m < 0x8000 for m in majors)
    assert len(majors) > 450  # distinct ids rarely share a handle


def test_fault_id_for_an_injection_is_short_and_safe() -> None:
    fid = fault_id_for("0.1/network-delay/Pod/shop/web-1")
    assert len(fid) == 10
    assert fid.isalnum()
    assert fid == fault_id_for("0.1/network-delay/Pod/shop/web-1")


# --- tc netem -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "netem"),
    [
        (NetworkDelay(latency_ms=100), "netem delay 100ms"),
        (NetworkDelay(latency_ms=100, jitter_ms=10), "netem delay 100ms 10ms"),
        (NetworkDelay(latency_ms=100, jitter_ms=10, correlation_percent=25), "netem delay 100ms 10ms 25%"),
        (NetworkDuplicate(percent=5), "netem duplicate 5%"),
        (NetworkDuplicate(percent=2.5, correlation_percent=10), "netem duplicate 2.5% 10%"),
        (NetworkCorrupt(percent=1), "netem corrupt 1%"),
        (NetworkLoss(percent=30, mechanism="netem"), "netem loss 30%"),
    ],
)
def test_netem_faults_replace_the_root_qdisc(fault: InPodFault, netem: str) -> None:
    assert lines(apply_commands(fault, FID)) == [f"tc qdisc add dev eth0 root handle {HANDLE} {netem}"]
    assert lines(revert_commands(fault, FID)) == [TC_REVERT]


def test_netem_limited_to_peers_goes_through_htb_and_u32() -> None:
    fault = NetworkDelay(
        latency_ms=200, scope=TrafficScope(interface="eth1", cidrs=("10.0.0.0/8", "fd00::/8"), ports=(80, 443))
    )
    assert lines(apply_commands(fault, FID)) == [
        "tc qdisc add dev eth1 root handle 1cdc: htb default 0 direct_qlen 1000",
        "tc class add dev eth1 parent 1cdc: classid 1cdc:1 htb rate 100gbit quantum 60000",
        "tc qdisc add dev eth1 parent 1cdc:1 netem delay 200ms",
        "tc filter add dev eth1 parent 1cdc: protocol ip prio 1 u32 match ip dst 10.0.0.0/8 match ip dport 80 0xffff flowid 1cdc:1",
        "tc filter add dev eth1 parent 1cdc: protocol ip prio 1 u32 match ip dst 10.0.0.0/8 match ip dport 443 0xffff flowid 1cdc:1",
        "tc filter add dev eth1 parent 1cdc: protocol ipv6 prio 2 u32 match ip6 dst fd00::/8 match ip6 dport 80 0xffff flowid 1cdc:1",
        "tc filter add dev eth1 parent 1cdc: protocol ipv6 prio 2 u32 match ip6 dst fd00::/8 match ip6 dport 443 0xffff flowid 1cdc:1",
    ]
    assert lines(revert_commands(fault, FID)) == ["tc qdisc del dev eth1 root handle 1cdc:"]


def test_filters_follow_the_families_given() -> None:
    only_v4 = NetworkCorrupt(percent=1, scope=TrafficScope(cidrs=("192.168.1.7",)))
    assert lines(apply_commands(only_v4, FID))[3:] == [
        "tc filter add dev eth0 parent 1cdc: protocol ip prio 1 u32 match ip dst 192.168.1.7/32 flowid 1cdc:1"
    ]
    only_ports = NetworkCorrupt(percent=1, scope=TrafficScope(ports=(5432,)))
    assert lines(apply_commands(only_ports, FID))[3:] == [
        "tc filter add dev eth0 parent 1cdc: protocol ip prio 1 u32 match ip dport 5432 0xffff flowid 1cdc:1",
        "tc filter add dev eth0 parent 1cdc: protocol ipv6 prio 2 u32 match ip6 dport 5432 0xffff flowid 1cdc:1",
    ]


# --- tc tbf ---------------------------------------------------------------------------------------------------


def test_bandwidth_is_a_token_bucket() -> None:
    fault = NetworkBandwidth(rate="1mbit")
    assert lines(apply_commands(fault, FID)) == [
        f"tc qdisc add dev eth0 root handle {HANDLE} tbf rate 1mbit burst 32768 latency 50ms"
    ]
    assert lines(revert_commands(fault, FID)) == [TC_REVERT]
    explicit = NetworkBandwidth(rate="10gbit", burst_bytes=65536, limit_bytes=1_000_000)
    assert lines(apply_commands(explicit, FID)) == [
        f"tc qdisc add dev eth0 root handle {HANDLE} tbf rate 10gbit burst 65536 limit 1000000"
    ]


def test_bandwidth_default_burst_grows_with_the_rate() -> None:
    assert NetworkBandwidth(rate="1mbit").burst == 32768
    assert NetworkBandwidth(rate="10gbit").burst == 12_500_000  # 10 ms at 1.25 GB/s


def test_bandwidth_limited_to_peers_hangs_tbf_under_htb() -> None:
    fault = NetworkBandwidth(rate="8mbit", scope=TrafficScope(cidrs=("10.200.0.2/32",), ports=(5201,)))
    assert lines(apply_commands(fault, FID)) == [
        "tc qdisc add dev eth0 root handle 1cdc: htb default 0 direct_qlen 1000",
        "tc class add dev eth0 parent 1cdc: classid 1cdc:1 htb rate 100gbit quantum 60000",
        "tc qdisc add dev eth0 parent 1cdc:1 tbf rate 8mbit burst 32768 latency 50ms",
        "tc filter add dev eth0 parent 1cdc: protocol ip prio 1 u32 match ip dst 10.200.0.2/32 match ip dport 5201 0xffff flowid 1cdc:1",
    ]


@pytest.mark.parametrize(
    ("rate", "bits"),
    [("1mbit", 1e6), ("500kbit", 5e5), ("1.5Gbit", 1.5e9), ("125kbps", 1e6), ("1mibit", 2**20), ("8bit", 8)],
)
def test_rates_read_as_tc_reads_them(rate: str, bits: float) -> None:
    assert rate_bits_per_second(rate) == bits


# --- nftables -------------------------------------------------------------------------------------------------


def test_loss_drops_a_random_share_with_nftables() -> None:
    fault = NetworkLoss(percent=30)
    assert lines(apply_commands(fault, FID)) == [
        "nft add table inet coordinator_f1",
        "nft add chain inet coordinator_f1 output '{' type filter hook output priority 0 ';' policy accept ';' '}'",
        "nft add rule inet coordinator_f1 output oifname '\"eth0\"' numgen random mod 100 '<' 30 counter drop",
    ]
    assert lines(revert_commands(fault, FID)) == [NFT_REVERT]


def test_total_loss_is_a_plain_drop() -> None:
    # nft refuses "numgen random mod 100 < 100" (the value must be 0-99): a 100 % loss never applied on a real pod.
    rule = lines(apply_commands(NetworkLoss(percent=100), FID))[-1]
    assert rule == "nft add rule inet coordinator_f1 output oifname '\"eth0\"' counter drop"


def test_loss_with_fractions_and_peers_in_both_directions() -> None:
    fault = NetworkLoss(
        percent=0.25, scope=TrafficScope(cidrs=("10.1.0.0/16", "fd00::/8"), ports=(53, 8080), direction="both")
    )
    drop = "numgen random mod 10000 '<' 25 counter drop"
    ports = "meta l4proto '{ tcp, udp }' th"
    assert lines(apply_commands(fault, FID)) == [
        "nft add table inet coordinator_f1",
        "nft add chain inet coordinator_f1 output '{' type filter hook output priority 0 ';' policy accept ';' '}'",
        f"nft add rule inet coordinator_f1 output oifname '\"eth0\"' ip daddr '{{' 10.1.0.0/16 '}}' {ports} dport '{{' '53, 8080' '}}' {drop}",
        f"nft add rule inet coordinator_f1 output oifname '\"eth0\"' ip6 daddr '{{' fd00::/8 '}}' {ports} dport '{{' '53, 8080' '}}' {drop}",
        "nft add chain inet coordinator_f1 input '{' type filter hook input priority 0 ';' policy accept ';' '}'",
        f"nft add rule inet coordinator_f1 input iifname '\"eth0\"' ip saddr '{{' 10.1.0.0/16 '}}' {ports} sport '{{' '53, 8080' '}}' {drop}",
        f"nft add rule inet coordinator_f1 input iifname '\"eth0\"' ip6 saddr '{{' fd00::/8 '}}' {ports} sport '{{' '53, 8080' '}}' {drop}",
    ]


def test_partition_drops_everything_both_ways_by_default() -> None:
    fault = NetworkPartition()
    assert lines(apply_commands(fault, FID)) == [
        "nft add table inet coordinator_f1",
        "nft add chain inet coordinator_f1 output '{' type filter hook output priority 0 ';' policy accept ';' '}'",
        "nft add rule inet coordinator_f1 output oifname '\"eth0\"' counter drop",
        "nft add chain inet coordinator_f1 input '{' type filter hook input priority 0 ';' policy accept ';' '}'",
        "nft add rule inet coordinator_f1 input iifname '\"eth0\"' counter drop",
    ]
    assert lines(revert_commands(fault, FID)) == [NFT_REVERT]
    egress_to = NetworkPartition(scope=TrafficScope(cidrs=("10.96.0.10",), direction="egress"))
    assert lines(apply_commands(egress_to, FID))[2:] == [
        "nft add rule inet coordinator_f1 output oifname '\"eth0\"' ip daddr '{' 10.96.0.10/32 '}' counter drop"
    ]


# --- stress and kill ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "hold"),
    [
        (CpuStress(workers=2, load_percent=50), "stress-ng --cpu 2 --cpu-load 50 --timeout 30s"),
        (MemoryStress(size="256m", workers=1), "stress-ng --vm 1 --vm-bytes 256m --vm-keep --timeout 30s"),
        (
            IoStress(workers=2, size="512m"),
            "stress-ng --hdd 2 --hdd-bytes 512m --temp-path /tmp --timeout 30s",
        ),
    ],
)
def test_stress_is_one_process_that_times_out_by_itself(fault: InPodFault, hold: str) -> None:
    commands = build_commands(fault, FID, 30)
    assert commands.apply == []
    assert commands.revert == []
    assert commands.hold is not None
    assert shlex.join(commands.hold) == hold
    assert hold_command(fault, 30) == commands.hold


def test_container_kill_signals_the_main_process_once() -> None:
    fault = ContainerKill(container="app", signal="SIGTERM", container_id="containerd://" + "ab" * 32)
    commands = build_commands(fault, FID, 30)
    assert commands.one_shot
    assert commands.revert == []
    assert commands.hold is None
    [[shell, flag, script]] = commands.apply
    assert (shell, flag) == ("/bin/sh", "-c")
    assert script.startswith(f"signal=TERM signum=15 container=app container_id={'ab' * 32} grace=10\n")
    assert 'kill -s "$signal" "$pid"' in script
    assert script == container_kill_script(fault)


def test_network_faults_hold_nothing_but_a_sleep() -> None:
    assert hold_command(NetworkLoss(percent=1), 30) is None
    assert hold_command(ContainerKill(container="app"), 30) is None


# --- validation -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: NetworkLoss(percent=120), "network-loss: percent must be between 0 and 100"),
        (lambda: NetworkLoss(percent=-1), "network-loss: percent must be between 0 and 100"),
        (lambda: NetworkLoss(percent=0.125), "network-loss: percent has at most 2 decimals"),
        (lambda: NetworkLoss(percent=5, correlation_percent=10), 'correlation_percent needs mechanism "netem"'),
        (lambda: NetworkDuplicate(percent=101), "network-duplicate: percent must be between 0 and 100"),
        (lambda: NetworkCorrupt(percent=5, correlation_percent=200), "network-corrupt: correlation_percent"),
        (lambda: NetworkDelay(latency_ms=0), "network-delay: latency_ms must be between 1 and 600000"),
        (lambda: NetworkDelay(latency_ms=10, jitter_ms=-1), "network-delay: jitter_ms"),
        (lambda: NetworkDelay(latency_ms=10, correlation_percent=5), "correlation_percent needs jitter_ms"),
        (
            lambda: NetworkDelay(latency_ms=10, scope=TrafficScope(direction="ingress")),
            'network-delay: direction "ingress" is not supported: tc shapes egress only',
        ),
        (lambda: NetworkBandwidth(rate="fast"), 'network-bandwidth: rate "fast" is not a tc rate'),
        (lambda: NetworkBandwidth(rate="10 mbit"), 'network-bandwidth: rate "10 mbit" is not a tc rate'),
        (lambda: NetworkBandwidth(rate="1mbit", burst_bytes=0), "network-bandwidth: burst_bytes must be"),
        (lambda: NetworkBandwidth(rate="1mbit", limit_bytes=-5), "network-bandwidth: limit_bytes must be"),
        (lambda: TrafficScope(cidrs=("10.0.0.0/33",)), 'cidrs: "10.0.0.0/33" is not an IPv4 or IPv6 CIDR'),
        (lambda: TrafficScope(ports=(0,)), "ports: 0 is not a port"),
        (lambda: TrafficScope(interface="eth0; reboot"), 'interface "eth0; reboot" is not a network interface'),
        (lambda: TrafficScope(direction="sideways"), "direction must be egress, ingress or both"),  # type: ignore[arg-type]
        (lambda: CpuStress(workers=0), "cpu-stress: workers must be between 1 and 256"),
        (lambda: CpuStress(load_percent=150), "cpu-stress: load_percent must be between 1 and 100"),
        (lambda: MemoryStress(size="lots"), 'memory-stress: size "lots" is not a size'),
        (lambda: IoStress(size="50%"), 'io-stress: size "50%" is not a size'),
        (lambda: IoStress(path="tmp"), 'io-stress: path "tmp" must be absolute'),
        (lambda: ContainerKill(container="App_1"), 'container-kill: container "App_1" is not a container name'),
        (lambda: ContainerKill(container="app", signal="SIGSTOP"), 'container-kill: signal "SIGSTOP" is not one of'),
        (lambda: ContainerKill(container="app", container_id="docker://xyz"), "container_id"),
    ],
)
def test_invalid_options_name_the_fault_and_the_option(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_signals_are_accepted_with_or_without_the_prefix() -> None:
    assert ContainerKill(container="app", signal="term").signal_name == "TERM"
    assert ContainerKill(container="app", signal="SIGKILL").signal_name == "KILL"


def test_ids_and_durations_are_checked() -> None:
    with pytest.raises(ValueError, match="fault id"):
        build_commands(NetworkLoss(percent=1), "bad id!", 30)
    with pytest.raises(ValueError, match="network-loss: duration_seconds must be between 1 and"):
        build_commands(NetworkLoss(percent=1), FID, 0)


# --- the agent script -----------------------------------------------------------------------------------------

SH = shutil.which("sh") or "/bin/sh"


def assert_parses(script: str) -> None:
    proc = subprocess.run([SH, "-n", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


ALL_FAULTS: list[InPodFault] = [
    NetworkDelay(latency_ms=100, jitter_ms=10, correlation_percent=25),
    NetworkDuplicate(percent=5),
    NetworkCorrupt(percent=5, scope=TrafficScope(cidrs=("10.0.0.0/8",), ports=(80,))),
    NetworkLoss(percent=30),
    NetworkLoss(percent=30, mechanism="netem"),
    NetworkPartition(),
    NetworkBandwidth(rate="1mbit"),
    CpuStress(),
    MemoryStress(),
    IoStress(),
    ContainerKill(container="app"),
    ContainerKill(container="app", signal="SIGTERM", container_id="0123456789abcdef"),
]


@pytest.mark.parametrize("fault", ALL_FAULTS, ids=lambda f: type(f).__name__)
def test_every_agent_script_is_valid_sh(fault: InPodFault) -> None:
    command = agent_command(fault, 30, fault_id=FID)
    assert command[:2] == ["/bin/sh", "-c"]
    assert_parses(command[2])
    assert_parses(revert_agent_command(fault, fault_id=FID)[2])


def test_agent_traps_before_it_applies_then_holds_then_reverts() -> None:
    fault = NetworkBandwidth(rate="8mbit")
    script = agent_script(fault, 45, fault_id=FID)
    apply = shlex.join(apply_commands(fault, FID)[0])
    revert = shlex.join(revert_commands(fault, FID)[0])
    positions = [
        script.index(f"out=$({revert} 2>&1)"),  # the revert lives in finish(), defined first ...
        script.index("trap 'finish 143' TERM"),  # ... armed before anything is applied ...
        script.index("trap 'finish $?' EXIT"),
        script.index(f"out=$({apply} 2>&1)"),  # ... then the fault ...
        script.index("sleep 45 &"),  # ... held so a signal interrupts at once ...
        script.rindex('wait "$hold_pid"'),
        script.index("finish 0"),  # ... and reverted when the duration is over.
    ]
    assert positions == sorted(positions)
    # A failed apply reverts what was done and says why.
    assert "kernel lacks sch_tbf" in script
    assert "finish 2" in script


def test_agent_explains_a_kernel_without_netem() -> None:
    script = agent_script(NetworkDelay(latency_ms=100), 10, fault_id=FID)
    assert "*'qdisc kind is unknown'*" in script
    assert "*'Specified qdisc not found'*" in script
    assert "why='kernel lacks sch_netem'" in script
    assert "reason 'network-delay not applied:' \"$why\"" in script


def test_agent_for_nftables_names_numgen() -> None:
    script = agent_script(NetworkLoss(percent=30), 10, fault_id=FID)
    assert "why='kernel lacks nft_numgen'" in script
    assert f"out=$({NFT_REVERT} 2>&1)" in script


def test_stress_agent_holds_the_stress_process() -> None:
    script = agent_script(CpuStress(workers=1, load_percent=80), 20, fault_id=FID)
    assert "stress-ng --cpu 1 --cpu-load 80 --timeout 20s &" in script
    assert "sleep 20" not in script
    assert "hold_pid=$!" in script


def test_one_shot_agent_has_nothing_to_hold_or_revert() -> None:
    script = agent_script(ContainerKill(container="app", signal="SIGTERM"), 20, fault_id=FID)
    assert "trap" not in script
    assert "finish" not in script
    assert "sleep 20" not in script
    assert "one shot" in script


def test_revert_script_tolerates_nothing_to_remove() -> None:
    script = revert_script(NetworkPartition(), fault_id=FID)
    assert f"out=$({NFT_REVERT} 2>&1)" in script
    assert "nothing to revert" in script
    assert script.rstrip().endswith('exit "$status"')
