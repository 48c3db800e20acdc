"""The admission webhooks' pure parts: the recorded requester and the webhook configurations."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from coordinator.adapters.certificates import (
    CA_LIFETIME,
    RENEW_BEFORE,
    SERVING_LIFETIME,
    covered_hosts,
    renewal_reason,
    renewed,
    signed_by,
)
from coordinator.api.models import API_VERSION, REQUESTED_BY_ANNOTATION, RUN_NOW_ANNOTATION, Requester
from coordinator.domain.admission import (
    MUTATE_TESTRUN,
    controlling_owner,
    recorded_requester,
    requester_of,
    webhook_configurations,
)

pytestmark = pytest.mark.unit

ALICE = {"username": "alice", "uid": "u-1", "groups": ["team-a", "system:authenticated"]}
OPERATOR = "system:serviceaccount:test-coordinator:test-coordinator"


def body(spec: dict[str, Any], requester: str | None = None) -> dict[str, Any]:
    annotations = {REQUESTED_BY_ANNOTATION: requester} if requester is not None else {}
    return {"metadata": {"name": "r", "annotations": annotations}, "spec": spec}


def forged() -> str:
    return Requester(username="bob", groups=["system:masters"]).to_annotation()


def test_a_create_records_the_requester_whatever_it_carries() -> None:
    value = recorded_requester("CREATE", ALICE, None, body({"a": 1}, forged()))
    assert value is not None
    assert Requester.from_annotation(value) == Requester(username="alice", uid="u-1", groups=ALICE["groups"])


def test_an_update_of_the_spec_records_the_new_requester() -> None:
    old = body({"abort": False}, forged())
    value = recorded_requester("UPDATE", ALICE, old, body({"abort": True}, forged()))
    assert value is not None
    assert Requester.from_annotation(value).username == "alice"


def test_an_update_without_a_spec_change_keeps_the_old_value_so_it_cannot_be_forged() -> None:
    original = Requester(username="carol").to_annotation()
    assert recorded_requester("UPDATE", ALICE, body({"a": 1}, original), body({"a": 1}, forged())) == original


def test_an_update_cannot_add_a_requester_the_object_never_had() -> None:
    assert recorded_requester("UPDATE", ALICE, body({"a": 1}), body({"a": 1}, forged())) is None


def test_a_run_the_operator_makes_for_its_scenario_inherits_the_scenarios_requester() -> None:
    inherited = Requester(username="carol", groups=["team-c"]).to_annotation()
    operator = {"username": OPERATOR, "groups": ["system:serviceaccounts"]}
    assert recorded_requester("CREATE", operator, None, body({"a": 1}, forged()), inherited) == inherited


def test_an_invalid_inherited_requester_is_not_used() -> None:
    value = recorded_requester("CREATE", {"username": OPERATOR}, None, body({"a": 1}), "{not json")
    assert value is not None
    assert Requester.from_annotation(value).username == OPERATOR


def test_inheritance_is_for_creation_only() -> None:
    inherited = Requester(username="carol").to_annotation()
    old = body({"abort": False}, inherited)
    value = recorded_requester("UPDATE", ALICE, old, body({"abort": True}, inherited), inherited)
    assert value is not None
    assert Requester.from_annotation(value).username == "alice"


def test_the_controlling_owner_is_read_from_the_owner_reference() -> None:
    owned = {
        "metadata": {
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "1", "controller": True},
                {"apiVersion": API_VERSION, "kind": "ChaosScenario", "name": "s", "uid": "2", "controller": True},
            ]
        }
    }
    assert controlling_owner(owned) == ("ChaosScenario", "s", "2")
    assert controlling_owner({"metadata": {}}) is None
    for kind in ("ChaosWorkflow", "TestRun"):  # a workflow's scheduled runs; a workflow run's children
        ref = {"apiVersion": API_VERSION, "kind": kind, "name": "w", "uid": "3", "controller": True}
        assert controlling_owner({"metadata": {"ownerReferences": [ref]}}) == (kind, "w", "3")
    pod = {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "4", "controller": True}
    assert controlling_owner({"metadata": {"ownerReferences": [pod]}}) is None


def test_requester_of_userinfo_without_uid_or_groups() -> None:
    assert requester_of({"username": "x"}) == Requester(username="x")
    assert json.loads(Requester(username="x").to_annotation()) == {"username": "x", "groups": []}


def test_a_malformed_annotation_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=REQUESTED_BY_ANNOTATION):
        Requester.from_annotation('{"groups": []}')


def test_configurations_by_url_fail_closed_and_name_every_handler() -> None:
    mutating, validating = webhook_configurations("inst", {"url": "https://127.0.0.1:9443"}, "Q0E=", ["team-a"])
    hooks = mutating["webhooks"] + validating["webhooks"]
    assert {h["failurePolicy"] for h in hooks} == {"Fail"}
    assert {h["clientConfig"]["caBundle"] for h in hooks} == {"Q0E="}
    assert mutating["webhooks"][2]["clientConfig"]["url"] == f"https://127.0.0.1:9443/{MUTATE_TESTRUN}"
    guarded = sorted(h["rules"][0]["resources"][0] for h in hooks)
    assert guarded == ["chaosscenarios", "chaosscenarios", "chaosworkflows", "chaosworkflows", "testruns", "testruns"]
    assert all(h["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a"] for h in hooks)
    testrun_rights = next(h for h in validating["webhooks"] if h["rules"][0]["resources"] == ["testruns"])
    assert testrun_rights["rules"][0]["operations"] == ["CREATE"]  # an abort is never refused


def test_configurations_by_service_carry_the_path_and_no_bundle_until_the_operator_sets_it() -> None:
    base = {"service": {"namespace": "ns", "name": "svc", "port": 443}}
    mutating, _ = webhook_configurations("inst", base, None, [])
    config = mutating["webhooks"][0]["clientConfig"]
    assert config == {
        "service": {"namespace": "ns", "name": "svc", "port": 443, "path": "/requested-by-chaosscenarios"}
    }
    assert "namespaceSelector" not in mutating["webhooks"][0]


NOW = datetime(2026, 12, 6, tzinfo=UTC)


def test_a_new_bundle_covers_its_hosts_and_is_good_until_renewal() -> None:
    bundle = renewed(None, "ca", ["127.0.0.1", "svc.ns.svc"], NOW)
    assert covered_hosts(bundle.serving) == {"127.0.0.1", "svc.ns.svc"}
    assert signed_by(bundle.serving, bundle.authority)
    assert renewal_reason(bundle, ["127.0.0.1"], NOW) is None
    assert renewal_reason(bundle, ["127.0.0.1"], NOW + SERVING_LIFETIME - RENEW_BEFORE + timedelta(hours=1)) == (
        "the serving certificate expires soon"
    )
    assert renewal_reason(bundle, ["other.host"], NOW) == "the serving certificate does not cover other.host"


def test_renewing_the_serving_certificate_keeps_the_ca_so_the_bundle_stays_valid() -> None:
    bundle = renewed(None, "ca", ["127.0.0.1"], NOW)
    later = NOW + SERVING_LIFETIME - RENEW_BEFORE + timedelta(days=1)
    again = renewed(bundle, "ca", ["127.0.0.1"], later)
    assert again.authority == bundle.authority
    assert again.serving != bundle.serving
    assert signed_by(again.serving, bundle.authority)
    assert renewal_reason(again, ["127.0.0.1"], later) is None


def test_a_new_ca_keeps_the_old_one_trusted_until_it_expires() -> None:
    bundle = renewed(None, "ca", ["127.0.0.1"], NOW)
    late = NOW + CA_LIFETIME - RENEW_BEFORE - SERVING_LIFETIME + timedelta(days=1)
    assert renewal_reason(bundle, ["127.0.0.1"], late) == "the CA expires soon"
    rotated = renewed(bundle, "ca", ["127.0.0.1"], late)
    assert rotated.authority != bundle.authority
    assert rotated.previous_authorities == bundle.authority.cert
    assert rotated.ca_bundle.startswith(rotated.authority.cert)
    assert not signed_by(rotated.serving, bundle.authority)


def test_asking_for_a_run_now_records_who_asked() -> None:
    original = Requester(username="bob").to_annotation()
    old = body({"a": 1}, original)
    new = body({"a": 1}, original)
    new["metadata"]["annotations"][RUN_NOW_ANNOTATION] = "token-1"
    value = recorded_requester("UPDATE", ALICE, old, new)
    assert value is not None
    assert Requester.from_annotation(value).username == "alice", "the run-now run acts with alice's rights"
