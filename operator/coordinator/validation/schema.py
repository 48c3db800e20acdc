"""What the API server checks on create, done offline: the CRD's openAPIV3Schema, its defaults, its CEL rules.

The schema is the one the CRDs in ``crds/`` are generated from (``coordinator.api.crd``). Unknown fields are errors
(kubectl's strict field validation). The CEL rules (``x-kubernetes-validations``) are evaluated as written with a
CEL interpreter, after defaulting, as the API server evaluates them.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from typing import Any

import celpy
from celpy.adapter import json_to_cel
from jsonschema import Draft7Validator, TypeChecker, validators
from jsonschema.exceptions import ValidationError as SchemaError

from coordinator.api.crd import KINDS, build_crd
from coordinator.api.models import (
    DNS_LABEL_PATTERN,
    DURATION_PATTERN,
    FIELD_SELECTOR_PATTERN,
    SCHEDULE_PATTERN,
    templatable,
)
from coordinator.api.probes import API_VERSION_PATTERN, KIND_PATTERN
from coordinator.validation.source import Document, FieldPath, Finding

Schema = dict[str, Any]

# What a pattern means, for messages a person can act on (the regular expressions are long).
_PATTERN_MEANINGS = {
    DURATION_PATTERN: "a duration such as 30s, 5m or 1h30m",
    templatable(DURATION_PATTERN): "a duration such as 30s, 5m or 1h30m, or a {{ params.NAME }} reference",
    DNS_LABEL_PATTERN: "a DNS label (lowercase letters, digits and '-')",
    templatable(DNS_LABEL_PATTERN): "a DNS label (lowercase letters, digits and '-') or a {{ params.NAME }} reference",
    SCHEDULE_PATTERN: "five cron fields, @hourly, @daily, @weekly, @monthly, @yearly or '@every <duration>'",
    API_VERSION_PATTERN: "an apiVersion such as v1 or apps/v1",
    templatable(API_VERSION_PATTERN): "an apiVersion such as v1 or apps/v1, or a {{ params.NAME }} reference",
    KIND_PATTERN: "a kind such as Deployment",
    templatable(KIND_PATTERN): "a kind such as Deployment, or a {{ params.NAME }} reference",
    templatable(FIELD_SELECTOR_PATTERN): "a field selector: key=value, key==value or key!=value terms separated by "
    "commas (escape \\, ',' and '=' in a value with a backslash), or a {{ params.NAME }} reference",
}


@cache
def crd_schema(kind: str) -> Schema:
    """The openAPIV3Schema of ``kind`` as generated from the models."""
    schema: Schema = build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _strict(node: Schema) -> Schema:
    """The schema as plain JSON Schema: int-or-string typed, unknown fields refused, Kubernetes keys dropped."""
    out: Schema = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _strict(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _strict(value)
        elif not key.startswith("x-kubernetes-"):
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if (
        node.get("type") == "object"
        # An object without properties takes none either: strict decoding refuses "unknown field" in it too.
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


_INT64 = range(-(2**63), 2**63)


def _is_integer(checker: TypeChecker, instance: object) -> bool:
    """An integer as the API server decodes one: a JSON number without fraction that fits an int64. A larger one
    decodes as a float, and "must be of type integer" (found by the differential fuzz tier: seed 2**63)."""
    if isinstance(instance, bool) or not isinstance(instance, int | float):
        return False
    if isinstance(instance, float) and not instance.is_integer():
        return False
    return int(instance) in _INT64


# Draft 7 with Kubernetes' integers.
_KubernetesValidator = validators.extend(  # type: ignore[no-untyped-call]
    Draft7Validator, type_checker=Draft7Validator.TYPE_CHECKER.redefine("integer", _is_integer)
)


@cache
def _validator(kind: str) -> Draft7Validator:
    schema = _strict(crd_schema(kind))
    # metadata is ObjectMeta, which the API server checks itself (validation/__init__.py checks its name).
    schema["properties"]["metadata"] = {"type": "object"}
    validator: Draft7Validator = _KubernetesValidator(schema)
    return validator


def apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """A copy of ``value`` with the schema's defaults filled in, as the API server defaults an object."""
    if isinstance(value, dict):
        out = dict(value)
        for name, sub in (schema.get("properties") or {}).items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = apply_defaults(sub, out[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in set(out) - set(schema.get("properties") or {}):
                out[name] = apply_defaults(extra, out[name])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _message(error: SchemaError) -> Iterator[tuple[FieldPath, str]]:
    path: FieldPath = tuple(error.absolute_path)
    value: Any = error.instance
    schema: dict[str, Any] = dict(error.schema) if isinstance(error.schema, Mapping) else {}
    match error.validator:
        case "required":
            for name in schema.get("required", []):
                if isinstance(value, dict) and name not in value:
                    yield (*path, name), "Required value"
        case "additionalProperties":
            known = set(schema.get("properties") or {})
            for name in sorted(set(value) - known) if isinstance(value, dict) else []:
                yield (*path, name), f'unknown field "{name}"'
        case "enum":
            allowed = ", ".join(_shown(v) for v in schema["enum"])
            yield path, f"Unsupported value: {_shown(value)}: supported values: {allowed}"
        case "type":
            expected = schema["type"] if isinstance(schema["type"], str) else " or ".join(schema["type"])
            yield path, f"Invalid value: {_shown(value)}: must be of type {expected}"
        case "pattern":
            meaning = _PATTERN_MEANINGS.get(schema["pattern"], f"a string matching {schema['pattern']}")
            yield path, f"Invalid value: {_shown(value)}: must be {meaning}"
        case "minimum":
            yield path, f"Invalid value: {_shown(value)}: must be greater than or equal to {schema['minimum']}"
        case "maximum":
            yield path, f"Invalid value: {_shown(value)}: must be less than or equal to {schema['maximum']}"
        case "minItems":
            yield path, f"Invalid value: must have at least {schema['minItems']} item(s)"
        case "maxItems":
            yield path, f"Too many: {len(value)}: must have at most {schema['maxItems']} item(s)"
        case "minLength":
            yield path, f"Invalid value: {_shown(value)}: must be at least {schema['minLength']} character(s)"
        case "maxLength":
            yield path, f"Too long: may not be longer than {schema['maxLength']}"
        case _:
            yield path, error.message


def schema_findings(document: Document) -> list[Finding]:
    """Schema violations of one ChaosScenario or TestRun document, each at its field's line."""
    findings = []
    for error in _validator(document.kind).iter_errors(document.data):
        for path, message in _message(error):
            findings.append(document.finding(path, message))
    return sorted(set(findings), key=lambda f: (f.line, f.field, f.message))


# --- CEL ------------------------------------------------------------------------------------------------------

_CEL = celpy.Environment()


def _is_cidr(value: Any) -> celpy.celtypes.BoolType:
    """Kubernetes' CEL ``isCIDR`` (its network library), which cel-python does not have."""
    try:
        ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        return celpy.celtypes.BoolType(False)
    return celpy.celtypes.BoolType(True)


# The Kubernetes CEL extensions the generated rules use.
_KUBERNETES_FUNCTIONS: dict[str, Callable[..., Any]] = {"isCIDR": _is_cidr}


@cache
def _program(rule: str) -> celpy.Runner:
    return _CEL.program(_CEL.compile(rule), functions=_KUBERNETES_FUNCTIONS)


def _verdict(rule: str, value: Any) -> tuple[bool, str]:
    """Whether ``rule`` holds for ``value``, and why not when it could not be evaluated.

    The API server refuses an object when one of its rules fails to evaluate (a missing key, a duration past what
    CEL holds): "no such key: probes evaluating rule: ...". So does validate. The schema findings come first, so a
    value of the wrong shape never gets here.
    """
    try:
        result = _program(rule).evaluate({"self": json_to_cel(value)})
    except Exception as exc:  # celpy raises some evaluation errors and returns others (below)
        return False, _cel_error(exc)
    if isinstance(result, celpy.celtypes.BoolType):
        return bool(result), ""
    return False, _cel_error(result)


_INNER_ERROR = re.compile(r"CELEvalError\(\*\(['\"](.*?)['\"],")


def _cel_error(error: object) -> str:
    """The innermost cause of a CEL evaluation error ("return error for overflow", "no such member ...")."""
    args = getattr(error, "args", ())
    inner = _INNER_ERROR.findall(str(args))
    return inner[-1] if inner else str(args[0] if args else error)


def cel_findings(document: Document, defaulted: Mapping[str, Any]) -> list[Finding]:
    """Violations of the CRD's CEL rules in the (defaulted) object, each at the rule's fieldPath."""
    findings: list[Finding] = []

    def walk(schema: Mapping[str, Any], value: Any, path: FieldPath) -> None:
        for validation in schema.get("x-kubernetes-validations", []):
            # A transition rule (it reads oldSelf) applies only to updates; a file describes a create.
            if "oldSelf" in validation["rule"]:
                continue
            holds, error = _verdict(validation["rule"], value)
            if not holds:
                where = path
                if "fieldPath" in validation:
                    where = (*path, *validation["fieldPath"].lstrip(".").split("."))
                why = f" (the rule could not be evaluated: {error})" if error else ""
                findings.append(document.finding(where, f"Invalid value: {validation['message']}{why}"))
        if isinstance(value, dict):
            properties = schema.get("properties") or {}
            for name, sub in value.items():
                if name in properties:
                    walk(properties[name], sub, (*path, name))
                elif isinstance(schema.get("additionalProperties"), dict):
                    walk(schema["additionalProperties"], sub, (*path, name))
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                walk(schema["items"], item, (*path, index))

    walk(crd_schema(document.kind), defaulted, ())
    return findings


def known_kinds() -> frozenset[str]:
    return frozenset(KINDS)
