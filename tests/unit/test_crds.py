"""The CRDs generated from the pydantic models: committed copies in sync, schemas structural and complete."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import Field

from coordinator.api import crd as crd_module
from coordinator.api import models
from coordinator.api.base import templatable
from coordinator.api.crd import (
    HEADER,
    KINDS,
    ResourceKind,
    SchemaConversionError,
    build_crd,
    build_crds,
    open_api_schema,
    render_crd,
    rendered_crds,
)
from coordinator.api.probes import GRPC_ADDRESS_PATTERN, URL_PATTERN, cel_string
from coordinator.cli.main import main

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"

# Short names of the resources every Kubernetes 1.33 API server serves (kubectl api-resources), plus those of
# popular add-ons a chaos-testing cluster may well run (Tekton's taskruns/pipelineruns).
TAKEN_SHORT_NAMES = {
    "cs", "cm", "ep", "ev", "limits", "ns", "no", "pvc", "pv", "po", "rc", "quota", "sa", "svc", "crd", "crds",
    "ds", "deploy", "rs", "sts", "hpa", "cj", "csr", "ing", "ip", "netpol", "pdb", "pc", "sc",
    "tr", "trs", "pr", "prs",
}  # fmt: skip

# Keys a structural schema node may carry (everything the generator is allowed to emit).
ALLOWED_KEYS = {
    "description", "type", "format", "enum", "pattern", "minimum", "exclusiveMinimum", "maximum",
    "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "minItems", "maxItems", "minProperties",
    "maxProperties", "default", "properties", "additionalProperties", "items", "required",
    "x-kubernetes-int-or-string", "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-validations",
}  # fmt: skip


def _schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node under ``node`` with its field path, ``node`` first."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}.*")


def _at(schema: dict[str, Any], json_path: str) -> dict[str, Any]:
    node = schema
    for part in json_path.strip(".").split("."):
        node = node["properties"][part]
    return node


def _all_nodes() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for kind in KINDS:
        for path, node in _nodes(_schema(kind)):
            yield kind, path, node


# --- the committed files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("file_name", sorted(rendered_crds()))
def test_committed_crds_match_the_models(file_name: str) -> None:
    path = CRD_DIR / file_name
    assert path.is_file(), f"crds/{file_name} is missing; run `make crds`"
    assert path.read_text(encoding="utf-8") == rendered_crds()[file_name], (
        f"crds/{file_name} differs from what operator/coordinator/api/models.py generates; run `make crds` "
        "and commit the result"
    )


def test_no_stale_crd_files() -> None:
    committed = {path.name for path in CRD_DIR.glob("*.yaml")}
    assert committed == set(rendered_crds()), "crds/ holds files the models no longer generate; run `make crds`"


def test_rendering_is_deterministic_and_round_trips() -> None:
    first, second = rendered_crds(), rendered_crds()
    assert first == second
    for name, crd in build_crds().items():
        text = first[f"{name}.yaml"]
        assert text.startswith(HEADER)
        assert "&id" not in text, "no YAML anchors in generated files"
        assert "*id" not in text, "no YAML aliases in generated files"
        assert yaml.safe_load(text) == crd


def test_cli_writes_then_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds", "--check", "--output-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "testruns.chaos.coordinator.dev.yaml" in err
    assert "make crds" in err

    assert main(["crds", "--output-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(rendered_crds())
    assert main(["crds", "--check", "--output-dir", str(tmp_path)]) == 0

    drifting = tmp_path / "chaosscenarios.chaos.coordinator.dev.yaml"
    drifting.write_text(drifting.read_text() + "# edited by hand\n")
    capsys.readouterr()
    assert main(["crds", "--check", "--output-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "chaosscenarios.chaos.coordinator.dev.yaml" in err
    assert "testruns" not in err


# --- CRD shape ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_names_scope_and_subresources(kind: str) -> None:
    crd = build_crd(kind)
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{models.GROUP}"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == kind
    assert spec["names"]["singular"] == kind.lower()
    assert spec["names"]["categories"] == ["chaos"]
    short_names = spec["names"]["shortNames"]
    assert short_names, "short names make kubectl pleasant"
    assert not set(short_names) & TAKEN_SHORT_NAMES
    [version] = spec["versions"]
    assert version["name"] == models.VERSION
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}


def test_short_names_are_unique_across_our_kinds() -> None:
    all_names = [name for kind in KINDS for name in build_crd(kind)["spec"]["names"]["shortNames"]]
    plurals = {resource.plural for resource in KINDS.values()}
    assert len(all_names) == len(set(all_names))
    assert not set(all_names) & plurals


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (
            "TestRun",
            ["Scenario", "Workflow", "Phase", "Targets", "Step", "Duration", "Recovery", "Age", "Score", "Reason"],
        ),
        (
            "ChaosScenario",
            [
                "Type",
                "Lifecycle",
                "Schedule",
                "Suspend",
                "Runs",
                "Pass-Rate",
                "Last",
                "Next",
                "Age",
                "Mode",
                "Last-Run",
            ],
        ),
        ("ChaosWorkflow", ["Schedule", "Suspend", "Runs", "Pass-Rate", "Last", "Age", "Policy", "Last-Run"]),
    ],
)
def test_printer_columns_point_at_fields_of_their_type(kind: str, expected: list[str]) -> None:
    version = build_crd(kind)["spec"]["versions"][0]
    columns = version["additionalPrinterColumns"]
    assert [column["name"] for column in columns] == expected
    schema = version["schema"]["openAPIV3Schema"]
    for column in columns:
        assert column["description"]
        if column["jsonPath"] == ".metadata.creationTimestamp":
            assert column["type"] == "date"
            continue
        if column["jsonPath"].startswith(".metadata.labels."):  # a label our operator sets (a string)
            assert column["type"] == "string"
            continue
        field = _at(schema, column["jsonPath"])
        # A date column (CronJob-style LAST and NEXT) reads a string field that holds an RFC 3339 time.
        assert field["type"] == ("string" if column["type"] == "date" else column["type"]), column
    wide_only = [column["name"] for column in columns if column.get("priority", 0) > 0]
    wide = {
        "TestRun": ["Score", "Reason"],
        "ChaosScenario": ["Mode", "Last-Run"],
        "ChaosWorkflow": ["Policy", "Last-Run"],
    }
    assert wide_only == wide[kind], "what waits for -o wide"


# --- structural schema --------------------------------------------------------------------------------------


def test_every_node_is_structural() -> None:
    for kind, path, node in _all_nodes():
        where = f"{kind}{path}"
        assert set(node) <= ALLOWED_KEYS, f"{where}: unexpected keys {set(node) - ALLOWED_KEYS}"
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, where
        else:
            assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, where
        if node.get("type") == "object":
            assert not ("properties" in node and "additionalProperties" in node), where
        if node.get("type") == "array":
            assert isinstance(node.get("items"), dict), f"{where}: arrays need an item schema"
        for name in node.get("required", []):
            assert name in node.get("properties", {}), f"{where}: required {name} is not a property"


def test_no_json_schema_leftovers_in_the_files() -> None:
    for text in rendered_crds().values():
        for leftover in ("$ref", "$defs", "anyOf", "oneOf", "allOf", "title:", "nullable", "type: 'null'"):
            assert leftover not in text, leftover


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_root_metadata_and_status(kind: str) -> None:
    schema = _schema(kind)
    assert schema["type"] == "object"
    assert schema["description"]
    assert schema["required"] == ["spec"]
    assert schema["properties"]["metadata"] == {"type": "object"}
    status = schema["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True, "later status fields must survive"
    assert status["properties"], "known status fields are listed"
    assert not any("default" in node for _, node in _nodes(status)), "status is the operator's to write"


def test_every_spec_field_is_described() -> None:
    for kind in KINDS:
        spec = _schema(kind)["properties"]["spec"]
        for path, node in _nodes(spec, "spec"):
            if not path.endswith(("[]", ".*")):
                assert node.get("description"), f"{kind}.{path} has no description for kubectl explain"


def test_optional_fields_are_plain_types_and_int_or_string_unions_are_marked() -> None:
    chaos = _schema("ChaosScenario")["properties"]["spec"]
    # value may hold a parameter reference: int-or-string, the bounds for integers, the pattern for strings.
    assert _at(chaos, ".value") == {
        "description": models.ChaosScenarioSpec.model_fields["value"].description,
        "pattern": f"^{models.PARAM_REFERENCE}$",
        "minimum": 1,
        "maximum": 100000,
        "x-kubernetes-int-or-string": True,
    }
    assert "value" not in chaos["required"]
    parameter = chaos["properties"]["parameters"]["items"]
    assert parameter["properties"]["default"]["x-kubernetes-int-or-string"] is True
    run = _schema("TestRun")["properties"]["spec"]
    assert run["properties"]["parameters"]["additionalProperties"] == {"x-kubernetes-int-or-string": True}
    assert _at(run, ".seed")["type"] == "integer"


def test_constraints_survive() -> None:
    chaos = _schema("ChaosScenario")["properties"]["spec"]
    steps = chaos["properties"]["steps"]
    assert (steps["minItems"], steps["maxItems"]) == (1, 32)
    step = steps["items"]
    assert step["properties"]["duration"]["pattern"] == models.templatable(models.DURATION_PATTERN)
    assert step["properties"]["name"]["maxLength"] == 63
    assert step["required"] == ["name", "faults"]
    assert _at(chaos, ".mode")["enum"] == [mode.value for mode in models.SelectionMode]
    assert _at(chaos, ".target.kind")["enum"] == [kind.value for kind in models.TargetKind]
    grace = step["properties"]["faults"]["items"]["properties"]["podKill"]["properties"]["gracePeriodSeconds"]
    assert (grace["minimum"], grace["maximum"]) == (0, 3600)


def test_spec_defaults_are_applied_literals_only() -> None:
    chaos = _schema("ChaosScenario")["properties"]["spec"]
    run = _schema("TestRun")["properties"]["spec"]
    assert _at(chaos, ".mode")["default"] == "one"
    assert _at(chaos, ".type")["default"] == "combined"
    assert _at(chaos, ".target.kind")["default"] == "Pod"
    assert chaos["properties"]["steps"]["items"]["properties"]["duration"]["default"] == "30s"
    assert (_at(run, ".dryRun")["default"], _at(run, ".abort")["default"]) == (False, False)
    assert _at(run, ".timeout")["default"] == "10m"
    for kind in KINDS:
        for path, node in _nodes(_schema(kind)["properties"]["spec"], "spec"):
            if "default" not in node:
                continue
            default = node["default"]
            assert default not in (None, [], {}), f"{kind}.{path}: no-op default"
            if "enum" in node:
                assert default in node["enum"], path
            if "pattern" in node:
                assert re.search(node["pattern"], default), path


def _model_classes() -> Iterator[type[models.Model]]:
    stack: list[type[models.Model]] = [models.Model]
    while stack:
        cls = stack.pop()
        yield cls
        stack.extend(cls.__subclasses__())


def test_every_cel_rule_is_emitted_with_its_message_and_field_path() -> None:
    emitted = {
        (rule["rule"], rule["message"], rule.get("fieldPath"))
        for _, _, node in _all_nodes()
        if node.get("type") == "object"
        for rule in node.get("x-kubernetes-validations", [])
    }
    declared = {
        (rule[0], rule[1], rule[2] if len(rule) > 2 else None)
        for cls in _model_classes()
        if cls.__module__.startswith("coordinator.api.")
        for rule in cls.cel_rules
    }
    assert declared, "the models declare CEL rules"
    assert declared == emitted
    for kind, path, node in _all_nodes():
        for rule in node.get("x-kubernetes-validations", []):
            if "fieldPath" in rule:
                field = rule["fieldPath"].lstrip(".")
                assert field in node["properties"], f"{kind}{path}: fieldPath {rule['fieldPath']} is no field"


def test_bounded_values_carry_their_cel_rule_on_the_field_itself() -> None:
    """Durations, CIDRs, URLs and gRPC addresses are checked by the API server where they stand (the rule's error
    names the field)."""
    rules = {
        path: [rule["rule"] for rule in node.get("x-kubernetes-validations", [])]
        for kind, path, node in _all_nodes()
        if node.get("type") == "string"
    }
    bounded = {path for path, found in rules.items() if found}
    for field in ("duration", "timeout", "interval", "initialDelay", "cidr", "url", "endpoint", "address"):
        assert any(path.endswith(f".{field}") for path in bounded), field
    url_rule = f"self.matches({cel_string(templatable(URL_PATTERN))})"
    address_rule = f"self.matches({cel_string(templatable(GRPC_ADDRESS_PATTERN))})"
    assert all(
        "duration(self)" in rule or rule in ("isCIDR(self)", url_rule, address_rule)
        for path in bounded
        for rule in rules[path]
    ), "string fields carry only the bound rules"


# --- conversion errors --------------------------------------------------------------------------------------


def test_unsupported_unions_are_errors_not_silent_schemas() -> None:
    class OddSpec(models.Model):
        choice: list[int] | str = Field(description="A union with no structural equivalent.")

    class OddStatus(models.Model):
        pass

    class OddResource(models.Resource):
        kind: str = "Odd"
        spec: OddSpec
        status: OddStatus | None = None

    odd = ResourceKind(model=OddResource, plural="odds", singular="odd", short_names=(), printer_columns=())
    with pytest.raises(SchemaConversionError, match=r"spec\.choice"):
        open_api_schema(odd)


def test_recursive_models_are_errors() -> None:
    class Node(models.Model):
        children: list[Node] = Field(default_factory=list, description="Sub-nodes.")

    class TreeSpec(models.Model):
        root: Node = Field(description="The root.")

    class TreeStatus(models.Model):
        pass

    class Tree(models.Resource):
        kind: str = "Tree"
        spec: TreeSpec
        status: TreeStatus | None = None

    Node.model_rebuild()
    tree = ResourceKind(model=Tree, plural="trees", singular="tree", short_names=(), printer_columns=())
    with pytest.raises(SchemaConversionError, match="contains itself"):
        open_api_schema(tree)


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        build_crd("Nope")


def test_render_is_the_header_plus_yaml() -> None:
    text = render_crd({"b": 1, "a": [{"z": 1, "y": 2}]})
    assert text == HEADER + "b: 1\na:\n- z: 1\n  y: 2\n", "keys keep insertion order"
    assert crd_module.HEADER == (
        '# Generated by "coordinator crds" from operator/coordinator/api/models.py. Do not edit.\n'
    )


def test_every_testrun_spec_field_but_abort_is_immutable() -> None:
    from coordinator.api.models import TestRunSpec

    assert set(TestRunSpec.IMMUTABLE_FIELDS) == set(TestRunSpec.model_fields) - {"abort"}
    crd = yaml.safe_load((CRD_DIR / "testruns.chaos.coordinator.dev.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    (rule,) = [r for r in spec["x-kubernetes-validations"] if "oldSelf" in r["rule"]]
    for field in TestRunSpec.IMMUTABLE_FIELDS:
        assert f"self.{field} == oldSelf.{field}" in rule["rule"]
    assert "abort" not in rule["rule"]
