"""Steady-state probes and assertions of a ChaosScenario, and their results in a TestRun's status.

Probe modes follow Litmus (SOT/EOT/Edge/Continuous/OnChaos) under plainer names: ``before`` (the baseline: no fault
is injected when it fails), ``after``, ``edge`` (both), ``during`` (sampled while faults are active) and
``continuous`` (sampled for the whole run). Assertions follow the seed domain's types.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator, model_validator

from coordinator.api.base import (
    DNS_LABEL_PATTERN,
    MAX_PROBE_INITIAL_DELAY,
    MAX_PROBE_INTERVAL,
    MAX_PROBE_TIMEOUT,
    MIN_PROBE_INTERVAL,
    PARAM_REFERENCE,
    LabelSelector,
    Model,
    Timestamp,
    duration_check,
    duration_field,
    templatable,
    unique_names,
)
from coordinator.api.durations import parse_duration

ProbeInterval = Annotated[
    str,
    duration_field(MAX_PROBE_INTERVAL, MIN_PROBE_INTERVAL),
    duration_check(MAX_PROBE_INTERVAL, MIN_PROBE_INTERVAL),
]
ProbeTimeout = Annotated[str, duration_field(MAX_PROBE_TIMEOUT, "1ms"), duration_check(MAX_PROBE_TIMEOUT, "1ms")]
ProbeDelay = Annotated[str, duration_field(MAX_PROBE_INITIAL_DELAY), duration_check(MAX_PROBE_INITIAL_DELAY)]


# --- what a probe may ask for: checked by the API server (pattern and CEL) and by the models alike -----------

# An http(s) URL whose host is a DNS name, an IPv4 address or a bracketed IPv6 address, with an optional port
# (1-65535) and path, query or fragment; no user info, no white space or control characters anywhere. A URL that
# only a parser's leniency would accept (http://[::1:bad]/ once sat in a retry loop as a "timeout") is refused
# when it is written. One regular expression serves both the CRD (RE2) and the models (Python).
_HEX4 = "[0-9A-Fa-f]{1,4}"
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = f"{_OCTET}([.]{_OCTET}){{3}}"
_IPV6 = "|".join(
    (
        f"({_HEX4}:){{7}}{_HEX4}",
        f"({_HEX4}:){{1,7}}:",
        f"({_HEX4}:){{1,6}}:{_HEX4}",
        f"({_HEX4}:){{1,5}}(:{_HEX4}){{1,2}}",
        f"({_HEX4}:){{1,4}}(:{_HEX4}){{1,3}}",
        f"({_HEX4}:){{1,3}}(:{_HEX4}){{1,4}}",
        f"({_HEX4}:){{1,2}}(:{_HEX4}){{1,5}}",
        f"{_HEX4}:(:{_HEX4}){{1,6}}",
        f":((:{_HEX4}){{1,7}}|:)",
        f"({_HEX4}:){{6}}{_IPV4}",
        f"::(ffff(:0{{1,4}})?:)?{_IPV4}",
        f"({_HEX4}:){{1,5}}:{_IPV4}",
    )
)
# A DNS name; its last label starts with a letter, so that 999.1.1.1 is neither an address nor a name.
_HOSTNAME = "([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?[.])*[A-Za-z]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?[.]?"
_PORT = "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
URL_PATTERN = f"^https?://({_HOSTNAME}|{_IPV4}|\\[({_IPV6})\\])(:{_PORT})?([/?#][^\\x00-\\x20\\x7f]*)?$"
URL_MESSAGE = (
    "not an http(s) URL: the host must be a DNS name, an IPv4 address or a bracketed IPv6 address, the port "
    "1-65535, with no user info, white space or control characters"
)
# RFC 7230 (RFC 9110, 5.6.2): a header name is a token. A value holds no control character but horizontal tab:
# CR or LF would start a header of the probe author's choosing (aiohttp refuses to send them, and a run then
# stayed Running in a retry loop), NUL ends it early.
HEADER_NAME_PATTERN = "^[-!#$%&'*+.^_`|~0-9A-Za-z]+$"
HEADER_NAME_MESSAGE = "header names must be RFC 7230 tokens: letters, digits and !#$%&'*+-.^_`|~"
HEADER_VALUE_PATTERN = "^[^\\x00-\\x08\\x0a-\\x1f\\x7f]*$"
# k8s probes build an API path from these; nothing that could add or climb a path segment gets through.
API_VERSION_PATTERN = (
    "^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?v[0-9]+((alpha|beta)[0-9]+)?$"
)
KIND_PATTERN = "^[A-Za-z][A-Za-z0-9]*$"
OBJECT_NAME_PATTERN = "^[A-Za-z0-9]([-A-Za-z0-9_.:]*[A-Za-z0-9])?$"


def cel_string(text: str) -> str:
    """``text`` as a CEL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _templated(value: str) -> bool:
    return re.search(PARAM_REFERENCE, value) is not None


def _strict(pattern: str, message: str) -> AfterValidator:
    """The model half of a templatable pattern: once rendered (no reference left), the value must match it."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not _templated(value) and compiled.fullmatch(value) is None:
            raise ValueError(message)
        return value

    return AfterValidator(check)


def _checked(pattern: str, message: str, max_length: int) -> Any:
    """The schema half: a CEL rule (the API server names the field and gives ``message``) that lets a value
    holding a parameter reference through; the rendered value is checked when the run starts."""
    return Field(
        max_length=max_length,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": f"self.matches({cel_string(templatable(pattern))})", "message": message}
            ]
        },
    )


ProbeUrl = Annotated[
    str, Field(pattern="^https?://"), _checked(URL_PATTERN, URL_MESSAGE, 2048), _strict(URL_PATTERN, URL_MESSAGE)
]
HeaderValue = Annotated[str, Field(pattern=HEADER_VALUE_PATTERN, max_length=4096)]

# The host:port of a gRPC server: the host as in a URL (a DNS name, an IPv4 address or a bracketed IPv6 address),
# the port required (a gRPC client has no scheme to take a default from).
GRPC_ADDRESS_PATTERN = f"^({_HOSTNAME}|{_IPV4}|\\[({_IPV6})\\]):{_PORT}$"
GRPC_ADDRESS_MESSAGE = (
    "not host:port: the host must be a DNS name, an IPv4 address or a bracketed IPv6 address, the port 1-65535"
)
GrpcAddress = Annotated[
    str,
    _checked(GRPC_ADDRESS_PATTERN, GRPC_ADDRESS_MESSAGE, 300),
    _strict(GRPC_ADDRESS_PATTERN, GRPC_ADDRESS_MESSAGE),
]
# A PEM certificate (or several): what grpcio's TLS accepts as root certificates.
PEM_CERTIFICATE_PATTERN = "^\\s*-----BEGIN CERTIFICATE-----[-A-Za-z0-9+/=\\s]+-----END CERTIFICATE-----\\s*$"


def check_header_names(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` unchanged; ValueError when a name is not an RFC 7230 token."""
    bad = [name for name in headers if re.fullmatch(HEADER_NAME_PATTERN, name) is None]
    if bad:
        raise ValueError(f"{HEADER_NAME_MESSAGE}; not a token: {bad[0][:64]!r}")
    return headers


class ProbeType(StrEnum):
    K8S = "k8s"
    HTTP = "http"
    PROMETHEUS = "prometheus"
    GRPC = "grpc"
    CMD = "cmd"


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

    apiVersion: Annotated[
        str,
        Field(pattern=templatable(API_VERSION_PATTERN)),
        _strict(API_VERSION_PATTERN, "not an apiVersion such as v1 or apps/v1"),
    ] = Field(default="apps/v1", max_length=253, description="The objects' apiVersion, e.g. apps/v1 or v1.")
    kind: Annotated[
        str, Field(pattern=templatable(KIND_PATTERN)), _strict(KIND_PATTERN, "not a kind such as Deployment")
    ] = Field(
        default="Deployment",
        max_length=63,
        description="The objects' kind, e.g. Deployment or Pod. Never Secret: probes do not read Secrets, and "
        "never show values read from ConfigMaps.",
    )
    namespace: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="Namespace; the scenario's when omitted. Never a protected namespace (the operator's settings).",
    )
    name: (
        Annotated[
            str,
            Field(pattern=templatable(OBJECT_NAME_PATTERN)),
            _strict(OBJECT_NAME_PATTERN, "not an object name such as web or web-0"),
        ]
        | None
    ) = Field(default=None, max_length=253, description="One object by name.")
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

    url: ProbeUrl = Field(
        description="The URL to request. Addresses in the operator's COORDINATOR_PROBE_DENY_CIDRS (link-local and "
        "cloud metadata by default) are refused, whatever name leads to them."
    )
    method: str = Field(
        default="GET", pattern=r"^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)$", description="HTTP method."
    )
    headers: Annotated[dict[str, HeaderValue], AfterValidator(check_header_names)] = Field(
        default_factory=dict,
        max_length=32,
        description="Request headers: names are RFC 7230 tokens, values hold no control characters (CR, LF, NUL). "
        "Every request also carries the run's correlation ID as traceparent (W3C Trace Context, the trace ID made "
        "from the TestRun's UID) and X-Correlation-ID (the UID) unless a header of that name is set here: yours "
        "wins.",
    )
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

    cel_rules = (
        (
            f"!has(self.headers) || self.headers.all(k, k.matches({cel_string(HEADER_NAME_PATTERN)}))",
            HEADER_NAME_MESSAGE,
            ".headers",
        ),
    )


class PrometheusProbe(Model):
    """A PromQL instant query whose (single) result is compared with a threshold."""

    endpoint: ProbeUrl | None = Field(
        default=None,
        description="Prometheus base URL; the operator's COORDINATOR_PROMETHEUS_URL when omitted. Denied addresses "
        "(COORDINATOR_PROBE_DENY_CIDRS) are refused as for http probes.",
    )
    query: str = Field(min_length=1, max_length=4096, description="The PromQL query.")
    operator: Comparison = Field(default=Comparison.LE, description="How the result compares with threshold.")
    threshold: float = Field(description="The value to compare the query result with.")


class GrpcTls(Model):
    """TLS to a gRPC server. The server's certificate is always verified: grpcio offers no way to skip that."""

    enabled: bool = Field(default=True, description="Speak TLS; plaintext when false.")
    caCert: str | None = Field(
        default=None,
        max_length=65536,
        pattern=PEM_CERTIFICATE_PATTERN,
        description="PEM certificates of the CAs to trust (a CA certificate is public: it goes in the spec, "
        "since probes never read Secrets); grpcio's bundled public roots when omitted.",
    )
    serverName: str | None = Field(
        default=None,
        max_length=253,
        pattern=f"^{_HOSTNAME}$",
        description="The name the server's certificate must carry (and the TLS server name sent); the address's "
        "host when omitted.",
    )

    cel_rules = (
        (
            "!has(self.enabled) || self.enabled || (!has(self.caCert) && !has(self.serverName))",
            "caCert and serverName need enabled: true",
        ),
    )


class GrpcProbe(Model):
    """A gRPC health check (grpc.health.v1.Health/Check): the sample passes when the server answers SERVING.
    Latency is recorded for every answered sample, from resolving the name to the answer: each sample connects
    afresh (with TLS, a new handshake)."""

    address: GrpcAddress = Field(
        description="host:port of the server, e.g. cart.shop.svc:50051 or [fd00::1]:50051. Each sample resolves "
        "the host and connects afresh; addresses in the operator's COORDINATOR_PROBE_DENY_CIDRS (link-local and "
        "cloud metadata by default) are refused, whatever name leads to them."
    )
    service: str = Field(
        default="",
        max_length=256,
        pattern="^[^\\x00-\\x1f\\x7f]*$",
        description="The service whose health is asked, e.g. shop.Cart; the server's overall health when empty.",
    )
    tls: GrpcTls | None = Field(default=None, description="TLS options; plaintext when omitted.")


ENV_NAME_PATTERN = "^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# An image reference as a container runtime takes it: no white space or control characters.
IMAGE_PATTERN = "^[^\\s\\x00-\\x1f\\x7f]+$"
QUANTITY_PATTERN = "^[0-9]+(\\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"
JSON_PATH_PATTERN = "^[$]?[A-Za-z0-9_.\\[\\]-]+$"


class EnvVar(Model):
    """One environment variable of a cmd probe's container (a plain value: probes never read Secrets)."""

    name: str = Field(pattern=ENV_NAME_PATTERN, max_length=253, description="The variable's name.")
    value: str = Field(default="", max_length=32768, description="Its value.")


class TolerationOperator(StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TolerationEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(Model):
    """A toleration of the cmd probe's Pod, as in a Pod spec."""

    key: str | None = Field(default=None, max_length=317, description="The taint key; every key with Exists.")
    operator: TolerationOperator = Field(default=TolerationOperator.EQUAL, description="Exists or Equal.")
    value: str | None = Field(default=None, max_length=63, description="The taint value for Equal.")
    effect: TolerationEffect | None = Field(
        default=None, description="NoSchedule, PreferNoSchedule or NoExecute; every effect when omitted."
    )
    tolerationSeconds: int | None = Field(default=None, ge=0, description="How long a NoExecute taint is tolerated.")


ResourceQuantities = Annotated[dict[str, Annotated[str, Field(pattern=QUANTITY_PATTERN)]], Field(max_length=8)]


class CmdResources(Model):
    """CPU and memory of the cmd probe's container, as in a Pod spec (e.g. cpu: 100m, memory: 64Mi)."""

    requests: ResourceQuantities = Field(default_factory=dict, description="Requested quantities.")
    limits: ResourceQuantities = Field(default_factory=dict, description="Limits.")


class CmdProbe(Model):
    """A command run in a short-lived Pod in the scenario's namespace, created for each sample with the
    requester's rights checked (create pods there). The sample passes when the command exits with expectedExitCode
    and its output passes the optional stdoutRegex and jsonPath checks; its latency runs from creating the Pod to
    the command's end (image pull and start included). A Pod that cannot start (an image that cannot be pulled, no
    node to run it, a config error) fails the sample with the reason. The Pod is deleted after each sample, and
    owned by the TestRun (in the same namespace) so that it is collected if the operator is gone."""

    image: str = Field(
        min_length=1, max_length=512, pattern=IMAGE_PATTERN, description="The container image, e.g. postgres:16."
    )
    imagePullPolicy: str | None = Field(
        default=None,
        pattern="^(Always|IfNotPresent|Never)$",
        description="Always, IfNotPresent or Never; Kubernetes' default (Always for :latest) when omitted.",
    )
    command: list[Annotated[str, Field(max_length=4096)]] = Field(
        min_length=1, max_length=64, description="The command (argv; no shell unless you run one)."
    )
    args: list[Annotated[str, Field(max_length=32768)]] = Field(
        default_factory=list, max_length=64, description="Arguments after the command."
    )
    env: list[EnvVar] = Field(default_factory=list, max_length=64, description="Environment variables.")
    expectedExitCode: int = Field(default=0, ge=0, le=255, description="The exit code that passes.")
    stdoutRegex: str | None = Field(
        default=None,
        max_length=1024,
        description="A regular expression the output must match (searched anywhere in it). The output is the "
        "container's log, stdout and stderr together, its first 64 KiB.",
    )
    jsonPath: str | None = Field(
        default=None,
        max_length=256,
        pattern=JSON_PATH_PATTERN,
        description="A path into the JSON the command prints, compared with value: $.rows[0].count, "
        "rows[0].count or rows.0.count (keys and indices only). The whole output is parsed, else its last "
        "non-empty line.",
    )
    operator: Comparison = Field(default=Comparison.EQ, description="How the JSON value compares with value.")
    value: int | str | None = Field(default=None, description="The value for jsonPath.")
    nodeSelector: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, max_length=16, description="The Pod's nodeSelector."
    )
    tolerations: list[Toleration] = Field(default_factory=list, max_length=16, description="The Pod's tolerations.")
    resources: CmdResources | None = Field(default=None, description="The container's resources.")
    serviceAccountName: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        max_length=253,
        description="The Pod's ServiceAccount, whose token is then mounted; without one, the namespace's default "
        "ServiceAccount and no token.",
    )
    runAsUser: int | None = Field(
        default=None,
        ge=1,
        le=2147483647,
        description="The user ID the command runs as. The Pod always runs as non-root: an image whose user is "
        "root (or a name) needs a numeric user here.",
    )

    cel_rules = (("!has(self.jsonPath) || has(self.value)", "jsonPath needs a value", ".value"),)

    @model_validator(mode="after")
    def _value_for_path(self) -> CmdProbe:
        if self.jsonPath is not None and self.value is None:
            raise ValueError("jsonPath needs a value")
        return self

    @field_validator("stdoutRegex")
    @classmethod
    def _compiles(cls, regex: str | None) -> str | None:
        if regex is not None:
            try:
                re.compile(regex)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return regex


class Probe(Model):
    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="The probe's name, unique in the scenario.")
    type: ProbeType = Field(description="k8s, http, prometheus, grpc or cmd; the options go in the field of that name.")
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

    @cached_property
    def interval_seconds(self) -> float:
        """``interval`` in seconds, parsed once."""
        return parse_duration(self.interval)

    @cached_property
    def timeout_seconds(self) -> float:
        """``timeout`` in seconds, parsed once."""
        return parse_duration(self.timeout)

    @cached_property
    def initial_delay_seconds(self) -> float:
        """``initialDelay`` in seconds, parsed once."""
        return parse_duration(self.initialDelay)

    weight: int = Field(default=1, ge=0, le=100, description="Weight in the resilience score.")
    k8s: K8sProbe | None = Field(default=None, description="Options of a k8s probe.")
    http: HttpProbe | None = Field(default=None, description="Options of an http probe.")
    prometheus: PrometheusProbe | None = Field(default=None, description="Options of a prometheus probe.")
    grpc: GrpcProbe | None = Field(default=None, description="Options of a grpc probe.")
    cmd: CmdProbe | None = Field(default=None, description="Options of a cmd probe.")

    cel_rules = (
        ("self.type != 'k8s' || has(self.k8s)", "a k8s probe needs k8s options", ".k8s"),
        ("self.type != 'http' || has(self.http)", "an http probe needs http options", ".http"),
        (
            "self.type != 'prometheus' || has(self.prometheus)",
            "a prometheus probe needs prometheus options",
            ".prometheus",
        ),
        ("self.type != 'grpc' || has(self.grpc)", "a grpc probe needs grpc options", ".grpc"),
        ("self.type != 'cmd' || has(self.cmd)", "a cmd probe needs cmd options", ".cmd"),
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
    AUDIT_TRAIL = "audit_trail"


class Assertion(Model):
    """A verdict computed from the probe samples and the run, e.g. availability >= 99 or recovery_time <= 30."""

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="The assertion's name.")
    type: AssertionType = Field(
        description="service_health (the probe passed), availability (% passing samples), latency/response_time "
        "(ms, at percentile), error_rate (% failing samples), throughput (prometheus value), recovery_time "
        "(seconds, worst step), data_consistency (the probe it names, typically a cmd probe running a query or a "
        "checksum script, ended Passed: its point checks passed, or while sampled it never failed failureThreshold "
        "times in a row; else it fails with the probe's last error), audit_trail (judged on the ledger "
        "once the run has reverted everything: every change it made is Reverted with a revertedAt or one-shot "
        "(Irreversible), and status.requestedBy names who asked for the run; a run that changed nothing passes "
        "only with a requester, and its message says the trail is empty)."
    )
    probe: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="The probe it reads (all but recovery_time and audit_trail).",
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
        (
            "self.type in ['recovery_time', 'audit_trail'] || has(self.probe)",
            "probe is required for this assertion type",
            ".probe",
        ),
        (
            "self.type in ['service_health', 'data_consistency', 'audit_trail'] || has(self.expected)",
            "expected is required for this assertion type",
            ".expected",
        ),
    )


class SteadyState(Model):
    probes: list[Probe] = Field(default_factory=list, max_length=32, description="The steady-state probes.")

    cel_rules = (
        (
            "!has(self.probes) || self.probes.all(p, self.probes.exists_one(q, q.name == p.name))",
            "probe names must be unique",
        ),
    )

    @field_validator("probes")
    @classmethod
    def _unique_names(cls, probes: list[Probe]) -> list[Probe]:
        return unique_names(probes, "probe")


# --- results in TestRun status -------------------------------------------------------------------------------

RECENT_SAMPLES = 60  # samples kept per probe in status.probes[].recent: enough for a timeline, a bounded status


class ProbeSampleMark(Model):
    """One sample of a probe, as a timeline draws it."""

    at: Timestamp = Field(description="When the sample was taken.")
    ok: bool = Field(description="Whether it passed.")


class ProbeResult(Model):
    name: str = Field(description="The probe.")
    type: str = Field(description="Its type.")
    mode: str = Field(description="Its mode.")
    samples: int = Field(default=0, description="Samples taken.")
    passed: int = Field(default=0, description="Samples that passed.")
    failed: int = Field(default=0, description="Samples that failed.")
    successPercent: float | None = Field(default=None, description="passed / samples * 100.")
    latencyP50Ms: float | None = Field(default=None, description="Median latency of http, grpc and cmd samples (ms).")
    latencyP95Ms: float | None = Field(
        default=None, description="95th percentile latency of http, grpc and cmd samples (ms)."
    )
    lastValue: str | None = Field(default=None, description="The last observed value (truncated).")
    lastError: str | None = Field(default=None, description="The last error or failed comparison (truncated).")
    verdict: str | None = Field(default=None, description="Passed, Failed or Error once decided.")
    recent: list[ProbeSampleMark] = Field(
        default_factory=list,
        max_length=RECENT_SAMPLES,
        description=f"The last {RECENT_SAMPLES} samples, oldest first, as of the run's last status write.",
    )


class AssertionResult(Model):
    name: str = Field(description="The assertion.")
    type: str = Field(description="Its type.")
    expected: str = Field(description="The expectation, e.g. '>= 99'.")
    actual: str | None = Field(default=None, description="The measured value.")
    passed: bool = Field(description="Whether it held.")
    message: str | None = Field(
        default=None,
        description="Why not, when it did not; for a pass, what it rests on when that is not obvious (an empty "
        "audit trail).",
    )
