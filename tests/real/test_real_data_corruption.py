"""data_corruption end to end on the real node (issue 23, item 4): an http-fault that flips bytes of the web pod's
responses, caught by a cmd probe that checks the body as a data-consistency script would, which fails the
data_consistency assertion. The probe's Pod and the web pod are real containers; the corruption is done by the
agent's proxy in the web pod's network namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

from support.chaos import Chaos
from support.realnode import NODE, OPERATOR_IMAGE, WEB_PORT, EffectLog, client_pod, kubectl, one_web_pod, pod_ip

# The check: fetch N bytes the web server sends as zeros, and count those that are not.
CHECK = (
    "import json, sys, urllib.request; "
    "body = urllib.request.urlopen(sys.argv[1], timeout=10).read(); "
    "print(json.dumps({'bytes': len(body), 'nonzero': sum(1 for b in body if b)}))"
)
PLACEMENT: dict[str, Any] = {
    "nodeSelector": {NODE.REAL_NODE_LABEL: NODE.REAL_NODE_LABEL_VALUE},
    "tolerations": [{"key": NODE.REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
}


def test_body_corruption_is_caught_by_a_cmd_probe_and_fails_data_consistency(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, kubeconfig: Path, effects: EffectLog
) -> None:
    ns = chaos.namespace
    pod = one_web_pod(core, apps, ns)
    url = f"http://{pod_ip(core, ns, pod.metadata.name)}:{WEB_PORT}/bytes?n=4096"
    probe = {
        "name": "body",
        "type": "cmd",
        "mode": "continuous",
        "interval": "1s",
        "timeout": "60s",
        "cmd": {
            "image": OPERATOR_IMAGE,
            "imagePullPolicy": "Never",
            "command": ["python3", "-c", CHECK],
            "args": [url],
            "jsonPath": "$.nonzero",
            "value": 0,
            "resources": {"limits": {"memory": "128Mi"}},
            **PLACEMENT,
        },
    }
    fault = {
        "type": "http-fault",
        "httpFault": {"port": WEB_PORT, "path": "/bytes", "corrupt": {"mode": "flip", "bytes": 16}},
    }
    chaos.scenario(
        "corrupt-body",
        {
            "type": "data_corruption",
            "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
            "mode": "all",
            "steps": [{"name": "flip", "duration": "20s", "faults": [fault]}],
            "steadyState": {"probes": [probe]},
            "assertions": [{"name": "body-intact", "type": "data_consistency", "probe": "body"}],
        },
    )
    run = chaos.run("corrupt-body")
    status = chaos.wait_phase(run, {"Passed", "Failed", "Error"}, timeout=300)
    assert status["phase"] == "Failed", status.get("message")
    assert [i for i in status.get("injections", []) if i.get("appliedAt")], "the baseline passed and the fault held"
    (result,) = status["probes"]
    assert result["failed"] >= 1, result
    # The baseline passed (the fault was injected after it), and the check passed again after the revert: the
    # recovery time is when it did.
    assert status.get("recoveryTimeSeconds") is not None, status
    (assertion,) = status["assertions"]
    assert assertion["passed"] is False
    assert "probe body: $.nonzero=16, want == 0" in assertion["message"], assertion
    # After the revert the same bytes arrive intact at another pod.
    peer = client_pod(core, ns)
    check = kubectl(kubeconfig, "exec", "-n", ns, peer, "-c", "app", "--", "python3", "-c", CHECK, url)
    assert '"nonzero": 0' in check.stdout, check.stdout
    effects.record(
        "http-fault corrupt (data_corruption)",
        f"16 bytes flipped in each /bytes response: a cmd probe's check saw {result['failed']} of "
        f"{result['samples']} samples corrupted; data_consistency failed ({assertion['message'][:60]})",
        "intact again after the revert (0 non-zero bytes)",
    )
