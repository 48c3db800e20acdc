"""The differential fuzz tier: documents generated from the CRDs' own OpenAPI schema (crds/*.yaml), mutated, then
judged twice, by ``coordinator validate`` and by the real API server (a server-side dry run of the create, with
strict field validation, as ``kubectl apply --dry-run=server`` sends it). The two must agree on every document.

Generation is deterministic for a seed: hypothesis draws the documents (``strategy`` turns the schema into a
strategy) and the mutations, with the database and shrinking off, so a seed always yields the same list.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from kubernetes import client

from coordinator.api.crd import KINDS
from coordinator.api.models import API_VERSION, GROUP, VERSION, FaultType

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"
Body = dict[str, Any]


def crd_spec_schema(kind: str) -> Body:
    """The ``spec`` schema of ``kind`` exactly as the committed CRD file holds it."""
    crd = yaml.safe_load((CRD_DIR / f"{KINDS[kind].plural}.{GROUP}.yaml").read_text())
    schema: Body = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def strategy(schema: Body) -> st.SearchStrategy[Any]:
    """Values valid for the structural ``schema`` (its OpenAPI subset: object, array, string with pattern, enum and
    length, integer with bounds, boolean, int-or-string). CEL rules are left out on purpose: what they refuse is
    for the two judges to find. Lists and maps stay short and plain strings small, so documents stay readable.

    Written here rather than with hypothesis-jsonschema, whose last release (0.23.1) calls a Hypothesis internal
    (``many.more()``) that current Hypothesis no longer has.
    """
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if schema.get("x-kubernetes-int-or-string"):
        low, high = int(schema.get("minimum", -5)), int(schema.get("maximum", 2**31))
        text = st.from_regex(schema["pattern"], fullmatch=True) if "pattern" in schema else st.text(max_size=12)
        return st.one_of(st.integers(low, high), text)
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties") or {}
        if not properties:
            extra = schema.get("additionalProperties")
            values = strategy(extra) if isinstance(extra, dict) else st.text(max_size=8)
            return st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True), values, max_size=3)
        required = set(schema.get("required") or [])
        return st.fixed_dictionaries(
            {name: strategy(sub) for name, sub in properties.items() if name in required},
            optional={name: strategy(sub) for name, sub in properties.items() if name not in required},
        )
    if kind == "array":
        low = int(schema.get("minItems", 0))
        return st.lists(
            strategy(schema.get("items") or {}), min_size=low, max_size=max(low, min(int(schema.get("maxItems", 3)), 3))
        )
    if kind == "string":
        if "pattern" in schema:
            top = int(schema.get("maxLength", 64))
            return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: len(s) <= top)
        low = int(schema.get("minLength", 0))
        return st.text(min_size=low, max_size=max(low, min(int(schema.get("maxLength", 16)), 16)))
    if kind == "integer":
        return st.integers(int(schema.get("minimum", -(2**31))), int(schema.get("maximum", 2**31)))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    return st.none()


# Values that sit on an edge somewhere in our schema or in the operator: durations past every maximum and past
# what a datetime holds, parameter references, CR/LF, label-invalid text, empty strings, numbers out of range.
EDGE_STRINGS = [
    "",
    "0s",
    "1ms",
    "24h",
    "24h1s",
    "168h",
    "169h",
    "99999999999h",
    "9" * 30 + "h",
    "{{ params.p }}",
    "{{ params.missing }}",
    "{{ params.p }}s",
    "{{params.p}",
    "a\r\nb",
    "bad value!",
    "kube-system",
    "10.0.0.0/8",
    "999.1.1.1/99",
    "::1/129",
    "http://[::1:bad]/",
    "http://169.254.169.254/",
    "spec.nodeName=,,==x",
    "metadata.name!=a,status.phase=Running",
    "UPPER",
    "x" * 64,
    "é",
    "fixed-percent",
    "pod-kill",
]
EDGE_NUMBERS: list[Any] = [0, -1, 1, 100, 101, 150, 1000, 100000, 100001, 2**31, 2**53 + 1, 2**63, 1.5, 1.0, True]


@dataclass
class Mutation:
    """What was done to a generated document, for the report of a disagreement."""

    path: tuple[str | int, ...]
    action: str


def _paths(node: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*path, index))


def _get(node: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


def mutate(draw: Callable[[st.SearchStrategy[Any]], Any], spec: Body) -> tuple[Body, list[Mutation]]:
    """Up to three mutations of ``spec``, each drawn: replace a value with an edge value, drop a key, add an
    unknown one, or duplicate a list item (duplicate names)."""
    spec = copy.deepcopy(spec)
    done: list[Mutation] = []
    for _ in range(draw(st.integers(0, 3))):
        paths = [p for p in _paths(spec) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _get(spec, path[:-1])
        key = path[-1]
        action = draw(st.sampled_from(["edge-string", "edge-number", "drop", "unknown", "duplicate"]))
        if action in ("edge-string", "edge-number"):
            value = draw(st.sampled_from(EDGE_STRINGS if action == "edge-string" else EDGE_NUMBERS))
            parent[key] = value
            action = f"{action} {value!r}"[:80]
        elif action == "drop":
            del parent[key]
        elif action == "unknown" and isinstance(parent, dict):
            parent["blastRadius"] = 3
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
        else:
            continue
        done.append(Mutation(path, action))
    return spec, done


@dataclass
class Generated:
    kind: str
    spec: Body
    mutations: list[Mutation] = field(default_factory=list)

    def body(self, name: str, namespace: str) -> Body:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": self.spec,
        }


FAULT_TYPES = frozenset(str(fault) for fault in FaultType)


def _option_field(fault_type: str) -> str:
    """``pod-kill`` -> ``podKill``: the field that holds a fault type's options."""
    head, *rest = fault_type.split("-")
    return head + "".join(part.capitalize() for part in rest)


def tidy(node: Any) -> Any:
    """Drop the options of other fault types from every fault, so that more generated scenarios get past the CEL
    rule that pairs them (the schema alone cannot say it; left untidied, nearly every scenario is refused there)."""
    if isinstance(node, list):
        return [tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: tidy(value) for key, value in node.items()}
    if out.get("type") in FAULT_TYPES:
        keep = _option_field(out["type"])
        out = {key: value for key, value in out.items() if key in ("type", keep)}
    return out


def generate(count: int, fixed_seed: int) -> list[Generated]:
    """``count`` documents, deterministic for ``fixed_seed``: about two ChaosScenarios for each TestRun, a third of
    them left as the schema generates them, the rest mutated."""
    strategies = {kind: strategy(crd_spec_schema(kind)) for kind in ("ChaosScenario", "TestRun")}
    out: list[Generated] = []

    @seed(fixed_seed)
    @settings(
        max_examples=count,
        database=None,
        derandomize=False,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def draw_one(data: st.DataObject) -> None:
        kind = data.draw(st.sampled_from(["ChaosScenario", "ChaosScenario", "TestRun"]))
        spec = data.draw(strategies[kind])
        if data.draw(st.integers(0, 2)):
            spec = tidy(spec)
        mutations: list[Mutation] = []
        if data.draw(st.integers(0, 2)):
            spec, mutations = mutate(data.draw, spec)
        out.append(Generated(kind, spec, mutations))

    draw_one()
    return out[:count]


# --- the two judges --------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    accepted: bool
    message: str


def api_server_verdict(custom: client.CustomObjectsApi, body: Body) -> Verdict:
    """The API server's answer to creating ``body`` (dry run: nothing is stored), with strict field validation."""
    namespace = body["metadata"]["namespace"]
    try:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, KINDS[body["kind"]].plural, body, dry_run="All", field_validation="Strict"
        )
    except client.ApiException as exc:
        if exc.status in (400, 413, 422):
            message = json.loads(exc.body or "{}").get("message", "") if exc.body else str(exc)
            return Verdict(False, f"{exc.status}: {message}")
        raise
    return Verdict(True, "")
