"""Steady-state probes and assertions of a ChaosScenario, and their results in a TestRun's status.

Probe modes follow Litmus (SOT/EOT/Edge/Continuous/OnChaos) under plainer names: ``before`` (the baseline: no fault
is injected when it fails), ``after``, ``edge`` (both), ``during`` (sampled while faults are active) and
``continuous`` (sampled for the whole run). Assertions follow the seed domain's types.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, field_validator

from coordinator.api.base import (
    DNS_LABEL_PATTERN,
    MAX_PROBE_INITIAL_DELAY,
    MAX_PROBE_INTERVAL,
    MAX_PROBE_TIMEOUT,
    MIN_PROBE_INTERVAL,
    LabelSelector,
    Model,
    duration_check,
    duration_field,
    unique_names,
)

ProbeInterval = Annotated[
    str,
    duration_field(MAX_PROBE_INTERVAL, MIN_PROBE_INTERVAL),
    duration_check(MAX_PROBE_INTERVAL, MIN_PROBE_INTERVAL),
]
ProbeTimeout = Annotated[str, duration_field(MAX_PROBE_TIMEOUT, "1ms"), duration_check(MAX_PROBE_TIMEOUT, "1ms")]
ProbeDelay = Annotated[str, duration_field(MAX_PROBE_INITIAL_DELAY), duration_check(MAX_PROBE_INITIAL_DELAY)]


class ProbeType(StrEnum):
    K8S = "k8s"
    HTTP = "http"
    PROMETHEUS = "prometheus"


class ProbeMode(StrEnum):
    BEFORE = "before"
    AFTER = "after"
    EDGE = "edge"
    DURING = "during"
    CONTINUOUS = "continuous"


class Comparison(StrEnum):
    EQ = "=="
    NE = "!="
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="


class K8sProbe(Model):
    """A field, condition or object count of Kubernetes objects, compared with a value."""

    apiVersion: str = Field(
        default="apps/v1", max_length=253, description="The objects' apiVersion, e.g. apps/v1 or v1."
    )
    kind: str = Field(default="Deployment", max_length=63, description="The objects' kind, e.g. Deployment or Pod.")
    namespace: str | None = Field(
        default=None, pattern=DNS_LABEL_PATTERN, max_length=63, description="Namespace; the scenario's when omitted."
    )
    name: str | None = Field(default=None, max_length=253, description="One object by name.")
    labelSelector: LabelSelector | None = Field(default=None, description="Objects by label (with count).")
    fieldPath: str | None = Field(
        default=None,
        max_length=256,
        pattern=r"^[A-Za-z0-9_.\[\]-]+$",
        description="Dotted path of the field to compare, e.g. status.readyReplicas.",
    )
    operator: Comparison = Field(default=Comparison.GE, description="How the field (or count) compares with the value.")
    value: int | str | None = Field(
        default=None, description="The value to compare with (numbers compare numerically)."
    )
    valueFromPath: str | None = Field(
        default=None,
        max_length=256,
        pattern=r"^[A-Za-z0-9_.\[\]-]+$",
        description="Compare with another field of the same object instead, e.g. spec.replicas.",
    )
    condition: str | None = Field(
        default=None, max_length=128, description="A status condition type that must be True, e.g. Available."
    )
    count: bool = Field(
        default=False,
        description="Compare the number of matching objects (for Pods: Running and Ready ones) with value.",
    )

    cel_rules = (
        ("has(self.name) || has(self.labelSelector)", "name or labelSelector is required"),
        (
            "has(self.fieldPath) || has(self.condition) || self.count",
            "one of fieldPath, condition or count is required",
        ),
    )


class HttpProbe(Model):
    """An HTTP request and what its response must look like. Latency is recorded for every sample."""

    url: str = Field(pattern=r"^https?://", max_length=2048, description="The URL to request.")
    method: str = Field(
        default="GET", pattern=r"^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)$", description="HTTP method."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Request headers.")
    body: str | None = Field(default=None, max_length=65536, description="Request body.")
    expectedStatus: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200], max_length=32, description="Accepted status codes."
    )
    bodyRegex: str | None = Field(
        default=None, max_length=1024, description="A regular expression the body must match."
    )
    jsonPath: str | None = Field(
        default=None,
        max_length=256,
        description="A dotted path into a JSON body (e.g. status.ok or items.0.name) compared with value.",
    )
    operator: Comparison = Field(default=Comparison.EQ, description="How the JSON value compares with value.")
    value: int | str | None = Field(default=None, description="The value for jsonPath.")


class PrometheusProbe(Model):
    """A PromQL instant query whose (single) result is compared with a threshold."""

    endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://",
        max_length=2048,
        description="Prometheus base URL; the operator's COORDINATOR_PROMETHEUS_URL when omitted.",
    )
    query: str = Field(min_length=1, max_length=4096, description="The PromQL query.")
    operator: Comparison = Field(default=Comparison.LE, description="How the result compares with threshold.")
    threshold: float = Field(description="The value to compare the query result with.")


class Probe(Model):
    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="The probe's name, unique in the scenario.")
    type: ProbeType = Field(description="k8s, http or prometheus; the options go in the field of that name.")
    mode: ProbeMode = Field(
        default=ProbeMode.EDGE,
        description="before (baseline; no injection when it fails), after, edge (both), during (while faults are "
        "active) or continuous (the whole run).",
    )
    interval: ProbeInterval = Field(
        default="1s",
        description=f"Time between samples in during/continuous mode; {MIN_PROBE_INTERVAL} to {MAX_PROBE_INTERVAL}.",
    )
    timeout: ProbeTimeout = Field(
        default="5s", description=f"How long one sample may take; 1ms to {MAX_PROBE_TIMEOUT}."
    )
    initialDelay: ProbeDelay = Field(
        default="0s", description=f"Wait this long before the first sample; at most {MAX_PROBE_INITIAL_DELAY}."
    )
    failureThreshold: int = Field(
        default=1, ge=1, le=1000, description="Consecutive failed samples that make the probe fail."
    )
    successThreshold: int = Field(
        default=1, ge=1, le=1000, description="Consecutive passing samples a before/after check needs."
    )
    stopOnFailure: bool = Field(
        default=False, description="When the probe fails, abort the run at once and roll every fault back."
    )
    weight: int = Field(default=1, ge=0, le=100, description="Weight in the resilience score.")
    k8s: K8sProbe | None = Field(default=None, description="Options of a k8s probe.")
    http: HttpProbe | None = Field(default=None, description="Options of an http probe.")
    prometheus: PrometheusProbe | None = Field(default=None, description="Options of a prometheus probe.")

    cel_rules = (
        ("self.type != 'k8s' || has(self.k8s)", "a k8s probe needs k8s options", ".k8s"),
        ("self.type != 'http' || has(self.http)", "an http probe needs http options", ".http"),
        (
            "self.type != 'prometheus' || has(self.prometheus)",
            "a prometheus probe needs prometheus options",
            ".prometheus",
        ),
    )


class AssertionType(StrEnum):
    SERVICE_HEALTH = "service_health"
    AVAILABILITY = "availability"
    LATENCY = "latency"
    RESPONSE_TIME = "response_time"
    ERROR_RATE = "error_rate"
    THROUGHPUT = "throughput"
    RECOVERY_TIME = "recovery_time"
    DATA_CONSISTENCY = "data_consistency"


class Assertion(Model):
    """A verdict computed from the probe samples and the run, e.g. availability >= 99 or recovery_time <= 30."""

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="The assertion's name.")
    type: AssertionType = Field(
        description="service_health (the probe passed), availability (% passing samples), latency/response_time "
        "(ms, at percentile), error_rate (% failing samples), throughput (prometheus value), recovery_time "
        "(seconds, worst step), data_consistency (a user-defined probe passed)."
    )
    probe: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="The probe it reads (all but recovery_time).",
    )
    operator: Comparison | None = Field(
        default=None,
        description="How the actual value compares with expected; >= for availability and throughput, <= otherwise.",
    )
    expected: float | None = Field(
        default=None, description="The expected value (percent, milliseconds or seconds by type)."
    )
    percentile: int = Field(default=95, ge=1, le=100, description="Percentile for latency/response_time.")

    cel_rules = (
        ("self.type == 'recovery_time' || has(self.probe)", "probe is required for this assertion type", ".probe"),
        (
            "self.type in ['service_health', 'data_consistency'] || has(self.expected)",
            "expected is required for this assertion type",
            ".expected",
        ),
    )


class SteadyState(Model):
    probes: list[Probe] = Field(default_factory=list, max_length=32, description="The steady-state probes.")

    cel_rules = (("self.probes.all(p, self.probes.exists_one(q, q.name == p.name))", "probe names must be unique"),)

    @field_validator("probes")
    @classmethod
    def _unique_names(cls, probes: list[Probe]) -> list[Probe]:
        return unique_names(probes, "probe")


# --- results in TestRun status -------------------------------------------------------------------------------


class ProbeResult(Model):
    name: str = Field(description="The probe.")
    type: str = Field(description="Its type.")
    mode: str = Field(description="Its mode.")
    samples: int = Field(default=0, description="Samples taken.")
    passed: int = Field(default=0, description="Samples that passed.")
    failed: int = Field(default=0, description="Samples that failed.")
    successPercent: float | None = Field(default=None, description="passed / samples * 100.")
    latencyP50Ms: float | None = Field(default=None, description="Median latency of http samples (ms).")
    latencyP95Ms: float | None = Field(default=None, description="95th percentile latency of http samples (ms).")
    lastValue: str | None = Field(default=None, description="The last observed value (truncated).")
    lastError: str | None = Field(default=None, description="The last error or failed comparison (truncated).")
    verdict: str | None = Field(default=None, description="Passed, Failed or Error once decided.")


class AssertionResult(Model):
    name: str = Field(description="The assertion.")
    type: str = Field(description="Its type.")
    expected: str = Field(description="The expectation, e.g. '>= 99'.")
    actual: str | None = Field(default=None, description="The measured value.")
    passed: bool = Field(description="Whether it held.")
    message: str | None = Field(default=None, description="Why not, when it did not.")
