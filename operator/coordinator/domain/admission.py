"""The admission webhooks' pure parts: who the requester is, and the webhook configurations themselves.

The mutating webhook records who created or last changed a spec in the annotation ``requested-by`` and overwrites
whatever the request carried, so the annotation cannot be forged. A run the operator creates for a scheduled
ChaosScenario inherits the requester recorded on that scenario.

The configurations are built here from one source, for both ways the webhooks are reached: a URL (the operator as
a local process, ``https://127.0.0.1:<port>``) or a Service (the operator in the cluster; ``manifests/``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coordinator.api.models import API_VERSION, GROUP, REQUESTED_BY_ANNOTATION, RUN_NOW_ANNOTATION, VERSION, Requester

# Handler ids: kopf routes a request by the last path segment of the webhook URL.
MUTATE_TESTRUN = "requested-by-testruns"
MUTATE_SCENARIO = "requested-by-chaosscenarios"
MUTATE_WORKFLOW = "requested-by-chaosworkflows"
VALIDATE_TESTRUN = "rights-testruns"
VALIDATE_SCENARIO = "rights-chaosscenarios"
VALIDATE_WORKFLOW = "rights-chaosworkflows"
# The owners whose requester a run the operator creates inherits: a scenario's or workflow's scheduled, run-now
# and triggered runs, and a workflow run's children.
INHERITING_FROM = ("ChaosScenario", "ChaosWorkflow", "TestRun")
TIMEOUT_SECONDS = 10

# The webhooks are called only when what they guard changes: a create, a new spec, or a touched requested-by
# annotation. The operator's own writes (finalizers, progress annotations, status) skip them entirely.
_ANNOTATION_CEL = (
    "(has({o}.metadata.annotations) && '{key}' in {o}.metadata.annotations ? {o}.metadata.annotations['{key}'] : '')"
)


def _changed(key: str) -> str:
    return f"{_ANNOTATION_CEL.format(o='object', key=key)} != {_ANNOTATION_CEL.format(o='oldObject', key=key)}"


# What a requester asks for: a new object, a new spec, or a run-now of a scenario.
SPEC_CHANGED = f"request.operation == 'CREATE' || object.spec != oldObject.spec || {_changed(RUN_NOW_ANNOTATION)}"
TESTRUN_CREATED = "request.operation == 'CREATE'"
REQUESTER_TOUCHED = f"{SPEC_CHANGED} || {_changed(REQUESTED_BY_ANNOTATION)}"


def requester_of(userinfo: Mapping[str, Any]) -> Requester:
    """The Requester of an admission request's ``userInfo``."""
    return Requester(
        username=str(userinfo.get("username") or ""),
        uid=userinfo.get("uid") or None,
        groups=[str(g) for g in userinfo.get("groups") or []],
    )


def annotation_of(body: Mapping[str, Any] | None, key: str = REQUESTED_BY_ANNOTATION) -> str | None:
    """An annotation of ``body`` (by default requested-by), None when it has none or it is not a string."""
    if body is None:
        return None
    value = ((body.get("metadata") or {}).get("annotations") or {}).get(key)
    return value if isinstance(value, str) else None


def requester_in(value: str | None) -> Requester | None:
    """The Requester a requested-by annotation's value holds; None when there is none or it is malformed."""
    if value is None:
        return None
    try:
        return Requester.from_annotation(value)
    except ValueError:
        return None


def recorded_requester(
    operation: str,
    userinfo: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    inherited: str | None = None,
) -> str | None:
    """The value the requested-by annotation must hold once the request is admitted; None to have none.

    - A run the operator creates for a ChaosScenario or ChaosWorkflow it controls (a scheduled, run-now or
      triggered run), or as a workflow run's child, gets ``inherited``, the requester recorded on that owner,
      looked up by the webhook (never taken from the request).
    - A create, or an update that changes the spec or asks for a run-now, records the requester of this request:
      a run-now run acts with the rights of whoever asked for it.
    - Any other update keeps the value the object had: a request cannot set, change or remove it.
    """
    if operation == "CREATE" and requester_in(inherited) is not None:
        return inherited
    asked = (
        operation == "CREATE"
        or old is None
        or old.get("spec") != new.get("spec")
        or annotation_of(old, RUN_NOW_ANNOTATION) != annotation_of(new, RUN_NOW_ANNOTATION)
    )
    return requester_of(userinfo).to_annotation() if asked else annotation_of(old)


def controlling_owner(body: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """The kind, name and UID of the ChaosScenario, ChaosWorkflow or TestRun (a workflow run) that controls
    ``body`` (its controller ownerReference), if any."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") in INHERITING_FROM and ref.get("apiVersion") == API_VERSION:
            return str(ref.get("kind")), str(ref.get("name")), str(ref.get("uid"))
    return None


# --- configurations ------------------------------------------------------------------------------------------


def configuration_name(namespace: str) -> str:
    """The name of the Mutating- and ValidatingWebhookConfiguration of the operator in ``namespace``: one per
    operator namespace, like its certificate (every instance there serves the same webhooks)."""
    return f"{namespace}.{GROUP}"


def _client_config(base: Mapping[str, Any], handler_id: str, ca_bundle: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if "url" in base:
        config["url"] = f"{str(base['url']).rstrip('/')}/{handler_id}"
    else:
        service = dict(base["service"])
        service["path"] = f"{str(service.get('path', '')).rstrip('/')}/{handler_id}"
        config["service"] = service
    if ca_bundle:
        config["caBundle"] = ca_bundle
    return config


def _webhook(
    name: str,
    handler_id: str,
    plural: str,
    operations: list[str],
    condition: str,
    base: Mapping[str, Any],
    ca_bundle: str | None,
    namespaces: list[str],
) -> dict[str, Any]:
    hook: dict[str, Any] = {
        "name": f"{name}.{plural}.{GROUP}",
        "admissionReviewVersions": ["v1"],
        "clientConfig": _client_config(base, handler_id, ca_bundle),
        "rules": [
            {
                "apiGroups": [GROUP],
                "apiVersions": [VERSION],
                "operations": operations,
                "resources": [plural],
                "scope": "Namespaced",
            }
        ],
        # Fail: a run or scenario nobody checked must not exist; while the operator is down, creating and
        # changing them is refused (docs/security.md), deleting them is not.
        "failurePolicy": "Fail",
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "timeoutSeconds": TIMEOUT_SECONDS,
        "matchConditions": [{"name": "guarded-change", "expression": condition}],
    }
    if namespaces:
        hook["namespaceSelector"] = {
            "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": sorted(namespaces)}]
        }
    return hook


def webhook_configurations(
    operator_namespace: str, base: Mapping[str, Any], ca_bundle: str | None, namespaces: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The MutatingWebhookConfiguration and the ValidatingWebhookConfiguration of the operator in
    ``operator_namespace``.

    ``base`` is the client config without the handler path: ``{"url": ...}`` or ``{"service": {...}}``;
    ``ca_bundle`` the CA bundle as base64 (None in the manifests: the operator fills it in); ``namespaces`` the
    exact namespaces watched, or empty for all of them.
    """
    name = configuration_name(operator_namespace)
    metadata = {"name": name, "labels": {"app.kubernetes.io/name": "test-coordinator"}}
    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": metadata,
        "webhooks": [
            _webhook(
                "requested-by", handler_id, plural, ["CREATE", "UPDATE"], REQUESTER_TOUCHED, base, ca_bundle, namespaces
            )
            for handler_id, plural in (
                (MUTATE_SCENARIO, "chaosscenarios"),
                (MUTATE_WORKFLOW, "chaosworkflows"),
                (MUTATE_TESTRUN, "testruns"),
            )
        ],
    }
    validating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": dict(metadata),
        "webhooks": [
            # A TestRun's spec is fixed once created, except spec.abort: an abort is never refused, even when
            # the requester has lost the rights since.
            _webhook(
                "rights",
                VALIDATE_TESTRUN,
                "testruns",
                ["CREATE"],
                TESTRUN_CREATED,
                base,
                ca_bundle,
                namespaces,
            ),
            _webhook(
                "rights",
                VALIDATE_SCENARIO,
                "chaosscenarios",
                ["CREATE", "UPDATE"],
                SPEC_CHANGED,
                base,
                ca_bundle,
                namespaces,
            ),
            # A workflow's DAG (cycles, unknown dependencies) and its requester's rights on each node's scenario.
            _webhook(
                "rights",
                VALIDATE_WORKFLOW,
                "chaosworkflows",
                ["CREATE", "UPDATE"],
                SPEC_CHANGED,
                base,
                ca_bundle,
                namespaces,
            ),
        ],
    }
    return mutating, validating
