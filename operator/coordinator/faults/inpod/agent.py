"""The agent: one POSIX ``sh`` script that applies a fault, holds it, and removes it (pure rendering).

The script is the fault's dead man's switch. It traps TERM, INT, HUP and EXIT *before* it applies anything, so
an interruption at any point reverts; it holds with ``sleep D & wait`` (or the stress-ng process, whose own
``--timeout`` ends it) so a signal interrupts the hold at once; and it reverts when the duration is over, whether
or not the operator is still there. Only SIGKILL of the agent leaves a fault behind, and only until the pod goes
(its network namespace goes with it) or the operator runs ``revert_agent_command``.

It needs nothing but ``sh`` and the fault's tool (tc, nft, stress-ng, kill). Exit status:

* 0: applied, held for the duration, reverted (or, for a one-shot fault, done);
* 2: not applied (the apply commands failed; whatever part was applied has been reverted);
* 3: container-kill could not deliver the signal;
* 4: a revert command failed: the fault may still be in place;
* 129, 130, 143: interrupted by HUP, INT or TERM, and reverted.

Every line it prints starts with ``coordinator-agent:``; the reason for a failure also goes to the container's
termination message (``/dev/termination-log``), where the operator reads it from the pod's status.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from coordinator.faults.inpod import clock_skew
from coordinator.faults.inpod.commands import FaultCommands, InPodFault, build_commands, fault_name, revert_commands

EXIT_NOT_APPLIED = 2
EXIT_NOT_DELIVERED = 3
EXIT_REVERT_FAILED = 4
TERMINATION_LOG = "/dev/termination-log"

# Messages of a revert that found nothing to remove: tc without our qdisc ("Invalid handle" when another root
# qdisc is there), nft without our table.
_NOTHING_TO_REVERT = (
    "Invalid handle",
    "Cannot delete qdisc with handle of zero",
    "Cannot find specified qdisc",
    "No such file or directory",
)

_PROLOGUE = """\
set -u
say() { printf 'coordinator-agent: %s\\n' "$*" >&2; }
reason() {
  say "$*"
  if [ -w {termination_log} ]; then printf '%s\\n' "$*" > {termination_log}; fi
}
"""


def _q(text: str) -> str:
    return shlex.quote(text)


def _case(substrings: Sequence[str]) -> str:
    """A ``case`` pattern matching output that contains any of ``substrings``."""
    return "|".join(f"*{_q(s)}*" for s in substrings)


# A self-explaining command's output, line by line, in the agent's log.
_REPORT = """if [ -n "$out" ]; then printf '%s\\n' "$out" | while IFS= read -r line; do say "$line"; done; fi"""


def _explains_itself(argv: Sequence[str]) -> bool:
    """A command whose own output is the report: its last line is the reason it failed (the clock-skew tracer
    and its architecture check), and what it did is printed when it succeeds (how many processes it patched)."""
    return clock_skew.explains_itself(list(argv))


def _failure_reasons(argv: Sequence[str]) -> list[tuple[tuple[str, ...], str]]:
    """(shell case patterns, reason) for an apply command's error output, most specific first."""
    tool = argv[0]
    if _explains_itself(argv):
        return []
    reasons: list[tuple[tuple[str, ...], str]] = [
        (
            ("Operation not permitted",),
            f"{tool}: operation not permitted: the agent needs NET_ADMIN and to run as root",
        ),
    ]
    if tool == "tc":
        interface = argv[argv.index("dev") + 1] if "dev" in argv else "?"
        reasons.append((("Cannot find device",), f"the pod has no network interface {interface}"))
        if argv[1] == "qdisc":
            kind = next((k for k in ("netem", "tbf", "htb") if k in argv), "?")
            reasons.append(
                (
                    (
                        "qdisc kind is unknown",
                        "Specified qdisc not found",
                        "Failed to find specified qdisc",
                        "Unknown qdisc",
                        "No such file or directory",
                    ),
                    f"kernel lacks sch_{kind}",
                )
            )
            if "root" in argv:
                reasons.append(
                    (
                        ("NLM_F_REPLACE needed", "Exclusivity flag on", "File exists"),
                        f"{interface} already has a root qdisc (another fault, or the pod's own shaping): not replacing it",
                    )
                )
        elif argv[1] == "class":
            reasons.append((("No such file or directory", "Unknown"), "kernel lacks sch_htb"))
        elif argv[1] == "filter":
            reasons.append((("Unknown filter", "No such file or directory"), "kernel lacks cls_u32"))
    elif tool == "nft":
        feature = (
            "nft_numgen"
            if "numgen" in argv
            else "nft_redir (nf_nat)"
            if "redirect" in argv
            else "nft_chain_nat"
            if "nat" in argv
            else "nf_tables"
        )
        reasons.append(
            (
                ("Protocol not supported", "Operation not supported", "No such file or directory"),
                f"kernel lacks {feature}",
            )
        )
    return reasons


def _apply_block(argv: Sequence[str], fault: str) -> str:
    line = shlex.join(argv)
    cases = "".join(f"    {_case(patterns)}) why={_q(why)} ;;\n" for patterns, why in _failure_reasons(argv))
    # The agent's own programs (programs/) and the clock-skew tracer print their reason for failing as their last
    # line.
    explains = _explains_itself(argv) or argv[0] == "python3"
    otherwise = '"$(printf \'%s\\n\' "$out" | tail -n 1)"' if explains else '"exit status $rc"'
    report = _REPORT + "\n" if _explains_itself(argv) else ""
    return (
        f"out=$({line} 2>&1); rc=$?\n"
        'if [ "$rc" -ne 0 ]; then\n'
        "  case $out in\n"
        f"{cases}"
        f"    *) why={otherwise} ;;\n"
        "  esac\n"
        f'  if [ "$rc" -eq 127 ]; then why={_q(argv[0] + " is not installed in the agent image")}; fi\n'
        f'  say {_q("apply failed: " + line)} "($out)"\n'
        f'  reason {_q(fault + " not applied:")} "$why"\n'
        f"  finish {EXIT_NOT_APPLIED}\n"
        "fi\n"
        f"say {_q('applied: ' + line)}\n"
        f"{report}"
    )


def _revert_block(argv: Sequence[str], indent: str = "  ") -> str:
    line = shlex.join(argv)
    lines = [
        f"if out=$({line} 2>&1); then",
        f"  say {_q('reverted: ' + line)}",
        *([f"  {_REPORT}"] if _explains_itself(argv) else []),
        "else",
        "  case $out in",
        f"    {_case(_NOTHING_TO_REVERT)}) say {_q('nothing to revert: ' + line)} ;;",
        f'    *) say {_q("revert failed: " + line)} "($out)"; status={EXIT_REVERT_FAILED} ;;',
        "  esac",
        "fi",
    ]
    return "".join(f"{indent}{text}\n" for text in lines)


def render_script(commands: FaultCommands, duration_seconds: int, description: str = "") -> str:
    """The agent script for ``commands`` (see the module docstring for its contract)."""
    prologue = _PROLOGUE.replace("{termination_log}", TERMINATION_LOG)
    if commands.one_shot:
        header = f"# test-coordinator in-pod agent: {commands.fault}, one shot{description}\n"
        # Not captured: when the signal ends the target's PID 1 this script dies with it, mid-command.
        blocks = "".join(
            f"{shlex.join(argv)}\n"
            "rc=$?\n"
            f'if [ "$rc" -ne 0 ]; then say {_q(commands.fault + " failed")} "(exit status $rc)"; exit "$rc"; fi\n'
            for argv in commands.apply
        )
        return header + prologue + blocks + "exit 0\n"

    header = f"# test-coordinator in-pod agent: {commands.fault} for {duration_seconds}s{description}\n"
    revert = "".join(_revert_block(argv) for argv in commands.revert)
    finish = (
        "hold_pid=\n"
        "finish() {\n"
        "  status=$1\n"
        "  trap '' TERM INT HUP\n"
        "  trap - EXIT\n"
        '  if [ -n "$hold_pid" ]; then\n'
        '    kill "$hold_pid" 2>/dev/null\n'
        '    wait "$hold_pid" 2>/dev/null\n'
        "    hold_pid=\n"
        "  fi\n"
        f"{revert}"
        f'  if [ "$status" -eq {EXIT_REVERT_FAILED} ]; then reason {_q(commands.fault + " revert failed: the fault may still be in place")}; fi\n'
        '  say "done (exit status $status)"\n'
        '  exit "$status"\n'
        "}\n"
        "trap 'finish 143' TERM\n"
        "trap 'finish 130' INT\n"
        "trap 'finish 129' HUP\n"
        "trap 'finish $?' EXIT\n"
    )
    apply = "".join(_apply_block(argv, commands.fault) for argv in commands.apply)
    if commands.ready_file is not None and commands.hold is not None:
        return header + prologue + finish + _serve_then_apply(commands, apply) + "say 'duration over'\nfinish 0\n"
    if commands.hold is not None:
        tool = commands.hold[0]
        start = f"{shlex.join(commands.hold)} &\nhold_pid=$!\n"
        if commands.hold_first:
            # A server the apply commands redirect traffic to: it listens before the first packet is redirected.
            apply = f"say {_q('starting: ' + shlex.join(commands.hold))}\n{start}{apply}"
            start = ""
        hold = (
            f"say {_q('holding: ' + shlex.join(commands.hold))}\n"
            f"{start}"
            'wait "$hold_pid"; rc=$?\n'
            "hold_pid=\n"
            'if [ "$rc" -ne 0 ]; then\n'
            f'  if [ "$rc" -eq 127 ]; then why={_q(tool + " is not installed in the agent image")}; '
            f'else why="{tool} exited with status $rc"; fi\n'
            f'  reason {_q(commands.fault + " not held:")} "$why"\n'
            f"  finish {EXIT_NOT_APPLIED}\n"
            "fi\n"
        )
    else:
        hold = (
            f"say {_q(f'holding for {duration_seconds}s')}\n"
            f"sleep {duration_seconds} &\n"
            "hold_pid=$!\n"
            'wait "$hold_pid"\n'
            "hold_pid=\n"
        )
    return header + prologue + finish + apply + hold + "say 'duration over'\nfinish 0\n"


# How long a server hold (http-fault's proxy) may take to listen before the agent gives up.
READY_TIMEOUT_SECONDS = 20


def _hold_failed(commands: FaultCommands, what: str) -> str:
    """The branch for a hold process that exited with ``$rc``; a reason the program wrote itself is kept."""
    tool = commands.hold[0] if commands.hold else "?"
    return (
        f'  if [ "$rc" -eq 127 ]; then why={_q(tool + " is not installed in the agent image")}; '
        f'else why="{tool} exited with status $rc{what}"; fi\n'
        f'  if [ -s {TERMINATION_LOG} ]; then say "$why"; else reason {_q(commands.fault + " not held:")} "$why"; fi\n'
        f"  finish {EXIT_NOT_APPLIED}\n"
    )


def _serve_then_apply(commands: FaultCommands, apply: str) -> str:
    """Start the server, wait for its ready file, apply (e.g. the redirect to it), then hold it.

    "holding" is said only once the server listens *and* the rules are in place: the operator's confirmation.
    """
    assert commands.hold is not None
    assert commands.ready_file is not None
    line, ready = shlex.join(commands.hold), _q(commands.ready_file)
    return (
        f"rm -f {ready}\n"
        f"say {_q('starting: ' + line)}\n"
        f"{line} &\n"
        "hold_pid=$!\n"
        "waited=0\n"
        f"while [ ! -e {ready} ]; do\n"
        '  if ! kill -0 "$hold_pid" 2>/dev/null; then\n'
        '    wait "$hold_pid"; rc=$?; hold_pid=\n'
        + "".join(f"  {text}\n" for text in _hold_failed(commands, " before it was ready").splitlines())
        + "  fi\n"
        f'  if [ "$waited" -ge {READY_TIMEOUT_SECONDS * 10} ]; then\n'
        f"    reason {_q(f'{commands.fault} not held: {commands.hold[0]} was not ready within {READY_TIMEOUT_SECONDS}s')}\n"
        f"    finish {EXIT_NOT_APPLIED}\n"
        "  fi\n"
        "  sleep 0.1\n"
        "  waited=$((waited + 1))\n"
        "done\n"
        f"{apply}"
        f"say {_q('holding: ' + line)}\n"
        'wait "$hold_pid"; rc=$?\n'
        "hold_pid=\n"
        'if [ "$rc" -ne 0 ]; then\n'
        f"{_hold_failed(commands, '')}"
        "fi\n"
    )


def agent_script(fault: InPodFault, duration_seconds: int, *, fault_id: str = "agent") -> str:
    """The script that applies ``fault``, holds it ``duration_seconds`` and reverts it.

    ``fault_id`` names the fault's nftables table and tc handle; the operator passes ``fault_id_for(injection
    id)`` so two faults on one pod never touch each other's rules.
    """
    return render_script(build_commands(fault, fault_id, duration_seconds), duration_seconds, f" (id {fault_id})")


def agent_command(fault: InPodFault, duration_seconds: int, *, fault_id: str = "agent") -> list[str]:
    """The ephemeral container's command: ``["/bin/sh", "-c", script]``."""
    return ["/bin/sh", "-c", agent_script(fault, duration_seconds, fault_id=fault_id)]


def revert_script(fault: InPodFault, *, fault_id: str = "agent") -> str:
    """Only the revert commands, for an operator that must remove a fault whose agent is gone or stuck.

    Safe to run at any time: it removes only this fault's table or qdisc, and finding nothing is success.
    """
    commands = revert_commands(fault, fault_id)
    body = "".join(_revert_block(argv, indent="") for argv in commands)
    return (
        f"# test-coordinator in-pod revert: {fault_name(fault)} (id {fault_id})\n"
        + _PROLOGUE.replace("{termination_log}", TERMINATION_LOG)
        + "status=0\n"
        + body
        + 'exit "$status"\n'
    )


def revert_agent_command(fault: InPodFault, *, fault_id: str = "agent") -> list[str]:
    """``["/bin/sh", "-c", revert_script]``."""
    return ["/bin/sh", "-c", revert_script(fault, fault_id=fault_id)]
