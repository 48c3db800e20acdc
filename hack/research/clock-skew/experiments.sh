#!/bin/bash
# RESEARCH, not shipped: the experiments behind docs/inpod-faults.md "clock-skew: what works without a privileged
# DaemonSet". Root on an x86-64 Linux host; needs gcc, util-linux (unshare, nsenter, setpriv). Builds into $OUT.
# The tracer is the shipped one (hack/agent/clock-skew/clock-skew.c, built as the Dockerfile's clock-skew-build
# stage builds it), so these experiments test what the fault runs. Its apply patches and exits (the patch expires
# by itself after EXPIRE_AFTER_S); "apply, hold, restore" is apply, sleep, restore, as the agent script does.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/clock-skew}
mkdir -p "$OUT"
gcc -O2 -Wall -Wextra -Werror -static -o "$OUT/coordinator-clock-skew" "$HERE/../../agent/clock-skew/clock-skew.c" || exit 1
gcc -O2 -pthread -o "$OUT/ticker" "$HERE/ticker.c" || exit 1
SKEW="$OUT/coordinator-clock-skew"
TAG=00000000000e5e71  # the patch's tag (a fault's id in the operator): restore with it removes only this patch

CONTAINERD_DEFAULT=+chown,+dac_override,+fsetid,+fowner,+mknod,+net_raw,+setgid,+setuid,+setfcap,+setpcap,+net_bind_service,+sys_chroot,+kill,+audit_write
BASELINE_ADDS=+audit_write,+chown,+dac_override,+fowner,+fsetid,+kill,+mknod,+net_bind_service,+setfcap,+setgid,+setpcap,+setuid,+sys_chroot
UID1000="--reuid=1000 --regid=1000 --clear-groups --bounding-set=-all --inh-caps=-all"

# case NAME TARGET_SETPRIV ATTACHER_SETPRIV: the target (ticker) is PID 1 of a new PID namespace with its own /proc;
# the attacher joins that PID and mount namespace, as an ephemeral container with targetContainerName does, and
# shifts the target's clock by one day for 2 s (the patch's own deadline 5 s later, as the agent sets it).
case_() {
  unshare --pid --fork --mount-proc setpriv $2 "$OUT/ticker" > "$OUT/case.log" 2>&1 &
  local upid=$! hostpid
  sleep 0.7
  hostpid=$(pgrep -P $upid)
  echo "== $1"
  echo "target: $(tr -s '\t' ' ' < /proc/$hostpid/status | grep -E '^(Uid|CapPrm)' | tr '\n' ' ')"
  nsenter -t "$hostpid" -p -m -- setpriv $3 /bin/sh -c \
    'echo "attacher: $(grep -E "^(Uid|CapEff|NoNewPrivs)" /proc/self/status | tr -s "\t" " " | tr "\n" " ")"; '"$SKEW"' apply 86400 7 pid:1 '"$TAG"' && sleep 2 && '"$SKEW"' restore pid:1 '"$TAG" 2>&1
  echo "target lines one day ahead: $(grep -c "$(date -u -d tomorrow +%F)" "$OUT/case.log")"
  kill -KILL "$hostpid"; wait $upid 2>/dev/null
}
case_ "A: root target (all caps); attacher root with only SYS_PTRACE" "--reuid=0" "--bounding-set=-all,+sys_ptrace --inh-caps=-all --no-new-privs"
case_ "B: root target (all caps); attacher root with no capability" "--reuid=0" "--bounding-set=-all --inh-caps=-all --no-new-privs"
case_ "C1: root target with containerd's default caps; attacher root with baseline's allowed adds" "--bounding-set=-all,$CONTAINERD_DEFAULT --inh-caps=-all" "--bounding-set=-all,$BASELINE_ADDS --inh-caps=-all --no-new-privs"
case_ "C2: root target with containerd's default minus NET_RAW; attacher root with baseline's allowed adds" "--bounding-set=-all,${CONTAINERD_DEFAULT/+net_raw,/} --inh-caps=-all" "--bounding-set=-all,$BASELINE_ADDS --inh-caps=-all --no-new-privs"
case_ "D: target uid 1000 without caps; attacher uid 1000 without caps" "$UID1000" "$UID1000 --no-new-privs"
case_ "E: target uid 1000 without caps; attacher root with no capability" "$UID1000" "--bounding-set=-all --inh-caps=-all --no-new-privs"
case_ "F: target uid 1000 without caps; attacher root with only SYS_PTRACE" "$UID1000" "--bounding-set=-all,+sys_ptrace --inh-caps=-all --no-new-privs"

echo "== G: self-expiry: inject one day for a 1 s fault and exit without restoring (a SIGKILLed agent)"
"$OUT/ticker" > "$OUT/g.log" 2>&1 & t=$!
sleep 0.6; "$SKEW" apply 86400 6 pid:$t $TAG; date -u +"injected at %T; the patch's deadline is 6 s later"
sleep 8; kill $t; cut -d' ' -f3 "$OUT/g.log" | uniq -c

echo "== H: a new process in the skewed target's namespaces (kubectl exec date) is not skewed"
unshare --pid --fork --mount-proc "$OUT/ticker" > "$OUT/h.log" 2>&1 & u=$!
sleep 0.6; hp=$(pgrep -P $u)
nsenter -t "$hp" -p -m -- "$SKEW" apply 86400 35 pid:1 $TAG
sleep 0.6; echo "target: $(tail -1 "$OUT/h.log")"; nsenter -t "$hp" -p -m -- date -u +"date: %F %T"
nsenter -t "$hp" -p -m -- "$SKEW" restore pid:1 $TAG; kill -KILL "$hp"; wait $u 2>/dev/null

echo "== I: 200 inject/restore cycles while 2 threads call clock_gettime in a loop"
"$OUT/ticker" -t 2 > "$OUT/i.log" 2>&1 & t=$!
sleep 0.5; ok=0
for _ in $(seq 1 200); do "$SKEW" apply 3600 65 pid:$t $TAG 2>/dev/null && "$SKEW" restore pid:$t $TAG 2>/dev/null && ok=$((ok + 1)); done
echo "cycles ok: $ok; target $(kill -0 $t && echo alive); $("$SKEW" status pid:$t)"; kill $t

echo "== J: time namespaces offset only CLOCK_MONOTONIC and CLOCK_BOOTTIME"
unshare --time --monotonic 86400 --boottime 86400 sh -c 'echo "in the new time namespace: date $(date -u +%T), uptime $(cut -d" " -f1 /proc/uptime)"; cat /proc/self/timens_offsets'
echo "host: date $(date -u +%T), uptime $(cut -d' ' -f1 /proc/uptime)"
unshare --time python3 -c '
import os
fd = os.open("/proc/self/timens_offsets", os.O_WRONLY)
for line in (b"realtime 86400 0", b"monotonic 5 0"):
    try:
        os.write(fd, line)
    except OSError as e:
        print(line.split()[0].decode() + ":", e)
'
