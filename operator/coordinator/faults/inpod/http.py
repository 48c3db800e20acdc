"""``http-fault``: what the agent runs for it (pure): the proxy's spec and the nftables redirect.

The proxy is ``programs/http_fault.py``, started by the agent as the fault's hold process *before* the redirect
exists: it listens on ``proxy_port(fault id)``, creates the ready file, and only then does the agent add the
rule that redirects the pod's inbound TCP traffic on ``port`` to it (nftables ``redirect`` in a ``nat``
prerouting chain of the fault's own table). Locally made connections, the proxy's own to the application
among them, never pass prerouting, so they are not redirected. docs/inpod-faults.md has the mechanism and the
limits (plain HTTP/1.1, inbound only, TLS refused).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("abort", "delay", "replace", "patch", "corrupt")
# Ports that speak TLS by convention: the proxy cannot read TLS, so a fault there could only break it.
TLS_PORTS = frozenset({443, 8443})
# The proxy computes framing itself; a replace or patch that set these would make the response unreadable.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
PROGRAM = "/opt/coordinator-agent/http_fault.py"
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_METHOD = re.compile(r"^[A-Z]{1,20}$")


def _regex(what: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f'http-fault: {what} "{pattern}" is not a regular expression: {exc}') from None


def _header_names(what: str, headers: Mapping[str, str], *, settable: bool) -> None:
    for name in headers:
        if not _HEADER_NAME.match(name):
            raise ValueError(f'http-fault: {what}: "{name}" is not a header name')
        if settable and name.lower() in FRAMING_HEADERS:
            raise ValueError(f"http-fault: {what}: {name} is set by the proxy itself (it frames the body)")


@dataclass(frozen=True)
class HttpFault:
    """``http-fault``: ``percent`` of the requests to ``port`` that match get ``action``.

    ``action`` is one entry, named by one of ``ACTIONS``, in the proxy's spec format: ``{"abort": {"statusCode":
    503}}``, ``{"abort": {"reset": True}}``, ``{"delay": {"delayMs": 1000}}``, ``{"replace": {"statusCode",
    "headers", "body"}}``, ``{"patch": {"headers", "jsonMergePatch"}}``, ``{"corrupt": {"mode", "bytes" |
    "ratio"}}``. A request matches when its method is ``method`` (any if None), its path (without the query)
    starts with ``path`` and matches ``path_regex`` in full, and each of ``headers`` matches its regex in full.
    """

    port: int
    action: Mapping[str, Mapping[str, Any]]
    percent: float = 100
    path: str | None = None
    path_regex: str | None = None
    method: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"http-fault: port {self.port} is not a port (1-65535)")
        if self.port in TLS_PORTS:
            raise ValueError(
                f"http-fault: port {self.port} is a TLS port; http-fault handles plain HTTP/1.1 only "
                "(the proxy cannot read or change TLS traffic)"
            )
        if not 0 <= self.percent <= 100:
            raise ValueError(f"http-fault: percent must be between 0 and 100, got {self.percent:g}")
        if self.path is not None and not self.path.startswith("/"):
            raise ValueError(f'http-fault: path "{self.path}" must start with /')
        if self.path_regex is not None:
            _regex("pathRegex", self.path_regex)
        if self.method is not None and not _METHOD.match(self.method):
            raise ValueError(f'http-fault: method "{self.method}" is not an HTTP method such as GET or POST')
        _header_names("headers", self.headers, settable=False)
        for name, pattern in self.headers.items():
            _regex(f"headers.{name}", pattern)
        if len(self.action) != 1 or next(iter(self.action)) not in ACTIONS:
            raise ValueError(f"http-fault: exactly one of {', '.join(ACTIONS)} is needed, got {sorted(self.action)}")
        self._check_action(self.kind, self.action[self.kind])

    @property
    def kind(self) -> str:
        return next(iter(self.action))

    @staticmethod
    def _check_action(kind: str, options: Mapping[str, Any]) -> None:
        status = options.get("statusCode")
        if status is not None and not 100 <= status <= 599:
            raise ValueError(f"http-fault: {kind}.statusCode {status} is not an HTTP status (100-599)")
        if kind == "abort" and (status is None) == (not options.get("reset")):
            raise ValueError("http-fault: abort needs exactly one of statusCode and reset: true")
        if kind == "delay" and not 1 <= int(options.get("delayMs", 0)) <= 600_000:
            raise ValueError("http-fault: delay must be between 1ms and 10m")
        if kind in ("replace", "patch"):
            _header_names(f"{kind}.headers", options.get("headers") or {}, settable=True)
        if kind == "patch" and "jsonMergePatch" in options and not isinstance(options["jsonMergePatch"], Mapping):
            raise ValueError("http-fault: patch.jsonMergePatch must be a JSON object")
        if kind == "corrupt":
            if options.get("mode", "flip") not in ("flip", "replace"):
                raise ValueError(f'http-fault: corrupt.mode must be flip or replace, got "{options.get("mode")}"')
            if options.get("bytes") is not None and options.get("ratio") is not None:
                raise ValueError("http-fault: corrupt takes bytes or ratio, not both")
            ratio = options.get("ratio")
            if ratio is not None and not 0 < ratio <= 1:
                raise ValueError(f"http-fault: corrupt.ratio must be above 0 and at most 1, got {ratio}")


def proxy_port(fault_id: str, avoid: int) -> int:
    """The proxy's port: stable per fault id, in 20000-29999 (below the kernel's ephemeral ports), never ``avoid``."""
    port = 20000 + int(hashlib.sha256(fault_id.encode()).hexdigest()[:8], 16) % 10000
    return port + 1 if port == avoid else port


def ready_file(fault_id: str) -> str:
    """The file the proxy creates once it listens (in the agent container's own /tmp)."""
    return f"/tmp/coordinator-{fault_id}.ready"  # noqa: S108 - the agent container's scratch space


def proxy_spec(fault: HttpFault, fault_id: str, duration_seconds: int) -> dict[str, Any]:
    """The JSON spec ``programs/http_fault.py`` reads (``Fault.from_spec``)."""
    spec: dict[str, Any] = {
        "port": fault.port,
        "proxyPort": proxy_port(fault_id, fault.port),
        "durationSeconds": duration_seconds,
        "percent": fault.percent,
        **{key: dict(value) for key, value in fault.action.items()},
    }
    optional = {"path": fault.path, "pathRegex": fault.path_regex, "method": fault.method}
    spec.update({key: value for key, value in optional.items() if value is not None})
    if fault.headers:
        spec["headers"] = dict(fault.headers)
    return spec


def hold_command(fault: HttpFault, fault_id: str, duration_seconds: int) -> list[str]:
    """The proxy's command line; it ends by itself after ``duration_seconds``."""
    spec = json.dumps(proxy_spec(fault, fault_id, duration_seconds), sort_keys=True, separators=(",", ":"))
    return ["python3", PROGRAM, spec, ready_file(fault_id)]


def apply_commands(fault: HttpFault, fault_id: str, table: str) -> list[list[str]]:
    """The redirect of inbound TCP ``port`` to the proxy, in the fault's own nftables table ``table``."""
    hook = ["{", "type", "nat", "hook", "prerouting", "priority", "-100", ";", "policy", "accept", ";", "}"]
    redirect = ["redirect", "to", f":{proxy_port(fault_id, fault.port)}"]
    return [
        ["nft", "add", "table", "inet", table],
        ["nft", "add", "chain", "inet", table, "prerouting", *hook],
        [
            "nft",
            "add",
            "rule",
            "inet",
            table,
            "prerouting",
            "iifname",
            "!=",
            '"lo"',
            "tcp",
            "dport",
            str(fault.port),
            "counter",
            *redirect,
        ],
    ]
