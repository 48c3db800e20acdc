"""``coordinator validate``: check ChaosScenario, ChaosWorkflow and TestRun YAML offline, before it reaches a cluster.

Three layers, each run only when the one before found nothing (so one mistake gives one finding, not a cascade):
the CRD schema (what the API server refuses), its CEL rules (after defaulting, as the API server evaluates them),
and the semantic checks the operator makes when a run starts (``validation.semantics``, ``validation.workflows``,
``validation.triggers``). Documents of other kinds
are skipped, so a directory of mixed manifests can be checked as it is.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.api.models import API_VERSION, DNS_SUBDOMAIN_PATTERN, GROUP, Parameter
from coordinator.domain.addresses import DEFAULT_DENIED_CIDRS, IPNetwork, parse_cidrs
from coordinator.engine.probing import ProbeReach
from coordinator.validation.schema import apply_defaults, cel_findings, crd_schema, known_kinds, schema_findings
from coordinator.validation.semantics import (
    ScenarioFacts,
    scenario_findings,
    scenario_warnings,
    testrun_admission_findings,
    testrun_findings,
)
from coordinator.validation.source import MAX_OBJECT_BYTES, Document, Finding, expand, json_size, load_file
from coordinator.validation.triggers import trigger_rules
from coordinator.validation.workflows import WorkflowFacts, workflow_findings, workflow_run_findings

__all__ = ["Finding", "Report", "validate_paths"]

DEFAULT_DENIED = parse_cidrs(DEFAULT_DENIED_CIDRS)


@dataclass
class Report:
    """Everything found in the files checked."""

    findings: list[Finding] = field(default_factory=list)
    # Accepted by the API server and the operator, but probably not meant: a fault that does not serve its
    # scenario's type (domain/scenario_types.py). They fail nothing unless asked (``validate --strict``).
    warnings: list[Finding] = field(default_factory=list)
    files: int = 0
    documents: int = 0  # ChaosScenario, ChaosWorkflow and TestRun documents checked

    @property
    def ok(self) -> bool:
        return not self.findings


def _own_kind(document: Document) -> list[Finding] | None:
    """None for a document of another API group (skipped); findings when it is ours but not a known kind."""
    data = document.data
    if not isinstance(data, dict):
        return None
    api_version = str(data.get("apiVersion") or "")
    if not api_version.startswith(f"{GROUP}/"):
        return None
    if api_version != API_VERSION:
        return [document.finding(("apiVersion",), f'unsupported version "{api_version}": use {API_VERSION}')]
    if document.kind not in known_kinds():
        return [
            document.finding(("kind",), f'unknown kind "{document.kind}": one of {", ".join(sorted(known_kinds()))}')
        ]
    return []


def _metadata(document: Document) -> list[Finding]:
    meta = document.data.get("metadata")
    if not isinstance(meta, dict) or not (meta.get("name") or meta.get("generateName")):
        return [document.finding(("metadata", "name"), "Required value: every object needs a name")]
    name = meta.get("name")
    if isinstance(name, str) and (len(name) > 253 or not re.fullmatch(DNS_SUBDOMAIN_PATTERN, name)):
        return [document.finding(("metadata", "name"), f'Invalid value: "{name}": must be a DNS subdomain name')]
    return []


def _at_run_start(findings: list[Finding]) -> list[Finding]:
    return [dataclasses.replace(finding, stage="run start") for finding in findings]


def _size(document: Document) -> list[Finding]:
    size = json_size(document.data)
    if size <= MAX_OBJECT_BYTES:
        return []
    message = f"{document.kind} of {size} bytes as JSON: the API server stores objects of at most {MAX_OBJECT_BYTES}"
    return [Finding(document.file, document.line, message)]


def _structural(document: Document) -> tuple[list[Finding], dict[str, object]]:
    """Size, schema and CEL findings, and the defaulted object (meaningful only when there are none)."""
    findings = _size(document)
    if findings:
        return findings, {}
    findings = _metadata(document) + schema_findings(document)
    if findings:
        return findings, {}
    defaulted = apply_defaults(crd_schema(document.kind), document.data)
    return cel_findings(document, defaulted), defaulted


def validate_paths(
    paths: Sequence[Path], protected: frozenset[str], denied: tuple[IPNetwork, ...] = DEFAULT_DENIED
) -> Report:
    """Check every ChaosScenario, ChaosWorkflow and TestRun in ``paths`` (files, or directories searched for *.yaml/*.yml), with
    the operator's protected namespaces and the addresses its probes never call (COORDINATOR_PROBE_DENY_CIDRS)."""
    reach = ProbeReach(protected=protected, denied=denied)
    report = Report()
    documents: list[Document] = []
    for path in paths:
        if not path.exists():
            report.findings.append(Finding(str(path), 1, "no such file or directory"))
    for path in expand([p for p in paths if p.exists()]):
        report.files += 1
        loaded, problems = load_file(path)
        report.findings += problems
        for document in loaded:
            own = _own_kind(document)
            if own is None:
                continue
            report.findings += own
            if not own:
                documents.append(document)
    report.documents = len(documents)
    scenarios: dict[tuple[object, object], ScenarioFacts] = {}
    workflows: list[tuple[Document, dict[str, object]]] = []
    runs: list[tuple[Document, dict[str, object]]] = []
    for document in documents:
        findings, defaulted = _structural(document)
        report.findings += findings
        if findings:
            continue
        spec = defaulted["spec"]
        assert isinstance(spec, dict)
        meta = document.data["metadata"]
        if document.kind in ("ChaosScenario", "ChaosWorkflow"):
            triggers = trigger_rules(spec, reach, meta.get("namespace"))
            report.findings += _at_run_start([document.finding(path, message) for path, message in triggers])
        if document.kind == "ChaosWorkflow":
            workflows.append((document, spec))
        elif document.kind == "ChaosScenario":
            own = _at_run_start(scenario_findings(document, spec, reach))
            report.findings += own
            report.warnings += scenario_warnings(document, spec)
            declared = [Parameter.model_validate(p) for p in spec.get("parameters") or []]
            scenarios[(meta.get("namespace"), meta.get("name"))] = ScenarioFacts(
                declared,
                spec=spec,
                name=f"ChaosScenario {document.ref}",
                namespace=meta.get("namespace"),
                reported=frozenset((f.field, f.message) for f in own),
            )
        else:
            runs.append((document, spec))
    # A workflow's nodes name scenarios of its namespace: every scenario is known before any workflow is checked.
    workflow_facts: dict[tuple[object, object], WorkflowFacts] = {}
    for document, spec in workflows:
        meta = document.data["metadata"]
        findings, facts = workflow_findings(document, spec, scenarios, reach)
        report.findings += _at_run_start(findings)
        workflow_facts[(meta.get("namespace"), meta.get("name"))] = facts
    for document, spec in runs:
        if spec.get("workflowRef"):
            workflow_ref = spec["workflowRef"]
            assert isinstance(workflow_ref, dict)
            workflow = workflow_facts.get((document.data["metadata"].get("namespace"), workflow_ref.get("name")))
            report.findings += _at_run_start(workflow_run_findings(document, spec, workflow))
            continue
        ref = spec.get("scenarioRef") or {}
        assert isinstance(ref, dict)
        namespace = ref.get("namespace") or document.data["metadata"].get("namespace")
        scenario = scenarios.get((namespace, ref.get("name")))
        report.findings += testrun_admission_findings(document, spec, scenario)
        report.findings += _at_run_start(testrun_findings(document, spec, scenario, reach))
    report.findings = sorted(set(report.findings), key=lambda f: (f.file, f.line, f.field, f.message))
    report.warnings = sorted(set(report.warnings), key=lambda f: (f.file, f.line, f.field, f.message))
    return report
