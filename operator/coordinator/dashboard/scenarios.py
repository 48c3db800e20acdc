"""The scenario page (``/scenarios/<namespace>/<name>``): its spec as YAML, its runs (now and stored), trend
charts of recovery time and pass rate, and the form that starts a run of it.

The form is built from the scenario's declared parameters and checked with the operator's own rules
(domain/parameters.py), so the page refuses what the operator would refuse, with the same message. The run is
created with the viewer's client: the API server (and its admission webhook) decides, and its refusal is shown.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web
from pydantic import ValidationError

from coordinator.adapters.kube import ApiError, resource_path
from coordinator.api.base import API_VERSION
from coordinator.api.models import Parameter, ParameterType
from coordinator.dashboard import queries
from coordinator.dashboard.rows import run_row
from coordinator.dashboard.scope import history_refusal
from coordinator.dashboard.server import render, state_of, viewer_of
from coordinator.domain.parameters import ParameterError, resolve_parameters
from coordinator.history.store import HistoryUnavailable

log = logging.getLogger(__name__)

STORED_RUNS_SHOWN = 20
DRY_RUN_FIELD = "dryRun"

# How each declared type is entered: an HTML input type and its step (numbers), or a true/false choice.
INPUT_TYPES: dict[ParameterType, str] = {
    ParameterType.STRING: "text",
    ParameterType.INTEGER: "number",
    ParameterType.NUMBER: "number",
    ParameterType.BOOLEAN: "select",
    ParameterType.DURATION: "text",
}


@dataclass(frozen=True)
class ParameterField:
    """One input of the start form."""

    name: str
    type: str  # the declared type
    input: str  # text, number or select
    value: str  # the default, or what the user sent
    required: bool
    description: str
    step: str = ""  # number inputs: "1" for integers, "any" for numbers
    placeholder: str = ""
    options: tuple[str, ...] = ()
    error: str = ""


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def declared_parameters(spec: Mapping[str, Any]) -> tuple[list[Parameter], list[str]]:
    """The parameters a scenario spec declares, and a problem for each declaration that is not valid."""
    declared: list[Parameter] = []
    problems: list[str] = []
    for index, item in enumerate(spec.get("parameters") or []):
        try:
            declared.append(Parameter.model_validate(item))
        except ValidationError as exc:
            problems.append(f"spec.parameters[{index}]: {exc.errors()[0]['msg']}")
    return declared, problems


def parameter_fields(
    declared: Sequence[Parameter],
    submitted: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
) -> list[ParameterField]:
    """The start form's inputs: one per declared parameter, filled with what was ``submitted`` or else the
    default, with the validation message of each in ``errors``."""
    fields = []
    for parameter in declared:
        kind = ParameterType(parameter.type)
        value = submitted.get(parameter.name, "") if submitted is not None else _text(parameter.default)
        fields.append(
            ParameterField(
                name=parameter.name,
                type=str(kind),
                input=INPUT_TYPES[kind],
                value=value,
                required=parameter.default is None,
                description=parameter.description or "",
                step={ParameterType.INTEGER: "1", ParameterType.NUMBER: "any"}.get(kind, ""),
                placeholder="30s, 5m, 1h" if kind == ParameterType.DURATION else "",
                # A required boolean has no blank choice: the user must pick one.
                options=("true", "false") if kind == ParameterType.BOOLEAN else (),
                error=(errors or {}).get(parameter.name, ""),
            )
        )
    return fields


@dataclass(frozen=True)
class StartRequest:
    """What the start form asked for, checked: the TestRun's parameters, or the problems found."""

    parameters: dict[str, int | str]
    errors: dict[str, str]  # parameter name -> message, as the operator words it
    submitted: dict[str, str]

    @property
    def valid(self) -> bool:
        return not self.errors


def check_start(declared: Sequence[Parameter], form: Mapping[str, str]) -> StartRequest:
    """The start form's values checked with the operator's rules (resolve_parameters): a blank field leaves the
    parameter to its default. The parameters are sent as the TestRun holds them (integers as integers, the rest
    as text), so the operator resolves them to what this check saw."""
    submitted = {p.name: str(form.get(p.name, "")).strip() for p in declared}
    overrides: dict[str, int | str] = {}
    for parameter in declared:
        value = submitted[parameter.name]
        if value == "":
            continue
        if ParameterType(parameter.type) == ParameterType.INTEGER and value.lstrip("-").isdigit():
            overrides[parameter.name] = int(value)
        else:
            overrides[parameter.name] = value
    errors: dict[str, str] = {}
    try:
        resolve_parameters(declared, overrides)
    except ParameterError as exc:
        for problem in exc.problems:
            # spec.parameters.NAME (the value given or missing) or spec.parameters[i].default (the scenario's).
            name = problem.field.removeprefix("spec.parameters.")
            if name not in submitted:
                index = int(problem.field.split("[", 1)[1].split("]", 1)[0]) if "[" in problem.field else -1
                name = declared[index].name if 0 <= index < len(declared) else name
            errors[name] = problem.message
    return StartRequest(overrides, errors, submitted)


def testrun_body(namespace: str, scenario: str, parameters: Mapping[str, int | str], dry_run: bool) -> dict[str, Any]:
    """The TestRun the start form creates: named after the scenario by the API server (generateName)."""
    spec: dict[str, Any] = {"scenarioRef": {"name": scenario}}
    if parameters:
        spec["parameters"] = dict(parameters)
    if dry_run:
        spec["dryRun"] = True
    return {
        "apiVersion": API_VERSION,
        "kind": "TestRun",
        "metadata": {"generateName": f"{scenario}-", "namespace": namespace},
        "spec": spec,
    }


def spec_yaml(scenario: Mapping[str, Any]) -> str:
    """The scenario as YAML, without the server's bookkeeping (managedFields)."""
    shown = {k: v for k, v in scenario.items() if k != "status"}
    metadata = {k: v for k, v in (shown.get("metadata") or {}).items() if k != "managedFields"}
    shown["metadata"] = metadata
    return yaml.safe_dump(shown, sort_keys=False, default_flow_style=False)


async def _page(
    request: web.Request,
    namespace: str,
    name: str,
    submitted: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
    refused: str | None = None,
    dry_run: bool = False,
    status: int = 200,
) -> web.Response:
    viewer = await viewer_of(request)
    try:
        scenario = await viewer.client.get(resource_path("ChaosScenario", namespace, name))
    except ApiError as exc:
        if exc.not_found:
            raise web.HTTPNotFound(text=f"ChaosScenario {namespace}/{name} not found") from None
        return render(
            request,
            "scenario.html",
            status=exc.status,
            title=name,
            namespace=namespace,
            name=name,
            scenario_refused=exc.message,
        )
    spec = scenario.get("spec") or {}
    declared, declaration_problems = declared_parameters(spec)

    runs_refused = None
    try:
        items = await viewer.client.list(resource_path("TestRun", namespace))
    except ApiError as exc:
        items, runs_refused = [], exc.message
    current = sorted(
        (
            run_row(item)
            for item in items
            if ((item.get("spec") or {}).get("scenarioRef") or {}).get("name") == name
            and (((item.get("spec") or {}).get("scenarioRef") or {}).get("namespace") or namespace) == namespace
        ),
        key=lambda r: r["started"],
        reverse=True,
    )

    store = state_of(request).history
    trend: list[queries.TrendPoint] = []
    stored: list[queries.HistoryRow] = []
    history_problem = None if store is not None else "no history store is configured"
    if store is not None:
        history_problem = await history_refusal(request, namespace)
    if store is not None and history_problem is None:
        try:
            trend = await store.read(lambda conn, t: queries.scenario_trend(conn, t, namespace, name))
            page = await store.read(
                lambda conn, t: queries.history_page(
                    conn, t, queries.HistoryFilters(scenario=f"{namespace}/{name}"), size=STORED_RUNS_SHOWN
                )
            )
            stored = page.rows
        except HistoryUnavailable as exc:
            history_problem = str(exc)
    chart = queries.chart_data(trend)
    measured = [p.recovery_seconds for p in trend if p.recovery_seconds is not None]
    return render(
        request,
        "scenario.html",
        status=status,
        title=name,
        namespace=namespace,
        name=name,
        scenario_refused=None,
        description=spec.get("description") or "",
        yaml_text=spec_yaml(scenario),
        fields=parameter_fields(declared, submitted, errors),
        declaration_problems=declaration_problems,
        dry_run=dry_run,
        refused=refused,
        current=current,
        runs_refused=runs_refused,
        stored=stored,
        history_link=f"/history?scenario={namespace}/{name}",
        history_problem=history_problem,
        trend_runs=len(trend),
        trend_passed=sum(1 for p in trend if p.passed),
        trend_measured=len(measured),
        chart_json=json.dumps(chart, separators=(",", ":")),
    )


async def scenario_page(request: web.Request) -> web.Response:
    return await _page(request, request.match_info["namespace"], request.match_info["name"])


async def start_run(request: web.Request) -> web.Response:
    """``POST /scenarios/<ns>/<name>/runs``: create a TestRun of the scenario as the viewer, then go to its page."""
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    viewer = await viewer_of(request)
    form = {k: str(v) for k, v in (await request.post()).items()}
    dry_run = form.get(DRY_RUN_FIELD) == "true"
    try:
        scenario = await viewer.client.get(resource_path("ChaosScenario", namespace, name))
    except ApiError as exc:
        if exc.not_found:
            raise web.HTTPNotFound(text=f"ChaosScenario {namespace}/{name} not found") from None
        return await _page(request, namespace, name, refused=exc.message, status=exc.status)
    declared, _ = declared_parameters(scenario.get("spec") or {})
    checked = check_start(declared, form)
    if not checked.valid:
        return await _page(
            request, namespace, name, submitted=checked.submitted, errors=checked.errors, dry_run=dry_run, status=422
        )
    try:
        created = await viewer.client.create(
            resource_path("TestRun", namespace), testrun_body(namespace, name, checked.parameters, dry_run)
        )
    except ApiError as exc:
        log.info("dashboard: %s may not start a run of %s/%s: %s", viewer.username, namespace, name, exc.message)
        return await _page(
            request,
            namespace,
            name,
            submitted=checked.submitted,
            refused=exc.message,
            dry_run=dry_run,
            status=exc.status if 400 <= exc.status < 500 else 502,
        )
    run = created["metadata"]["name"]
    log.info("dashboard: %s started TestRun %s/%s of scenario %s", viewer.username, namespace, run, name)
    raise web.HTTPSeeOther(f"/runs/{namespace}/{run}")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/scenarios/{namespace}/{name}", scenario_page, name="scenario")
    app.router.add_post("/scenarios/{namespace}/{name}/runs", start_run, name="start-run")
