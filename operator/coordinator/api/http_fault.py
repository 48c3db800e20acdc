"""Options of ``http-fault``: a transparent HTTP/1.1 proxy in the target pod answers for its application.

The agent redirects the pod's inbound TCP traffic on ``port`` to the proxy (nftables), and ``percent`` of the
requests that match get exactly one action. See docs/inpod-faults.md ("http-fault") for the mechanism and limits.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator

from coordinator.api.base import Model, duration_check, duration_field

# Ports that speak TLS by convention: the proxy cannot read TLS, so a fault there could only break it.
TLS_PORTS = (443, 8443)
# Headers the proxy frames the body with itself.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
MAX_DELAY = "10m"


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f'"{pattern}" is not a regular expression: {exc}') from None
    return pattern


def _names(headers: dict[str, str] | None) -> dict[str, str] | None:
    for name in headers or {}:
        if not re.match(_HEADER_NAME, name):
            raise ValueError(f'"{name}" is not a header name')
    return headers


def _settable(headers: dict[str, str] | None) -> dict[str, str] | None:
    for name in _names(headers) or {}:
        if name.lower() in FRAMING_HEADERS:
            raise ValueError(f"{name} is set by the proxy itself (it frames the body)")
    return headers


Regex = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_compiles)]
MatchHeaders = Annotated[dict[str, Regex] | None, AfterValidator(_names)]
StatusCode = Annotated[int, Field(ge=100, le=599)]
DelayDuration = Annotated[str, duration_field(MAX_DELAY, "1ms"), duration_check(MAX_DELAY, "1ms")]
SetHeaders = Annotated[dict[str, Annotated[str, Field(max_length=8192)]] | None, AfterValidator(_settable)]


class HttpAbortOptions(Model):
    statusCode: StatusCode | None = Field(
        default=None, description="Answer with this status (and a short text body) without asking the application."
    )
    reset: bool = Field(default=False, description="Reset the connection instead (the client sees ECONNRESET).")

    cel_rules = (
        ("has(self.statusCode) != (has(self.reset) && self.reset)", "abort needs exactly one of statusCode and reset"),
    )


class HttpDelayOptions(Model):
    duration: DelayDuration = Field(
        description=f"How long each faulted request waits before it is forwarded, at most {MAX_DELAY}."
    )


class HttpReplaceOptions(Model):
    statusCode: StatusCode | None = Field(
        default=None, description="The response's status instead of the application's."
    )
    headers: SetHeaders = Field(default=None, description="Response headers set (replacing any of the same name).")
    body: str | None = Field(
        default=None, max_length=1 << 20, description="The response body instead of the application's."
    )

    cel_rules = (
        ("has(self.statusCode) || has(self.headers) || has(self.body)", "replace needs statusCode, headers or body"),
    )


class HttpPatchOptions(Model):
    headers: SetHeaders = Field(default=None, description="Response headers added or overridden.")
    jsonMergePatch: dict[str, Any] | None = Field(
        default=None,
        description="A JSON merge patch (RFC 7386) applied to a JSON response body; a body that is not JSON is left "
        "as it is.",
    )

    cel_rules = (("has(self.headers) || has(self.jsonMergePatch)", "patch needs headers or jsonMergePatch"),)


class CorruptMode(StrEnum):
    FLIP = "flip"
    REPLACE = "replace"


class HttpCorruptOptions(Model):
    mode: CorruptMode = Field(
        default=CorruptMode.FLIP,
        description="flip: every bit of each chosen byte is inverted; replace: each chosen byte becomes another random "
        "byte.",
    )
    bytes: int | None = Field(
        default=None, ge=1, le=1 << 20, description="How many bytes of each faulted body change (default 1)."
    )
    # Not gt=0: pydantic writes exclusiveMinimum as a number, which a CRD's schema (a boolean there) refuses.
    ratio: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Or: the share of each faulted body's bytes that change, above 0 (at least one byte).",
    )

    cel_rules = (
        ("!(has(self.bytes) && has(self.ratio))", "corrupt takes bytes or ratio, not both"),
        ("!has(self.ratio) || self.ratio > 0.0", "ratio must be above 0", ".ratio"),
    )

    @field_validator("ratio")
    @classmethod
    def _above_zero(cls, ratio: float | None) -> float | None:
        if ratio is not None and ratio <= 0:
            raise ValueError("ratio must be above 0")
        return ratio


_ACTIONS = ("abort", "delay", "replace", "patch", "corrupt")


class HttpFaultOptions(Model):
    port: int = Field(
        ge=1, le=65535, description="The pod's TCP port whose inbound HTTP/1.1 requests are faulted (not a TLS port)."
    )
    path: str | None = Field(
        default=None, pattern=r"^/", max_length=1024, description="Only requests whose path starts with this."
    )
    pathRegex: Regex | None = Field(
        default=None, description="Only requests whose whole path (without the query) matches this regular expression."
    )
    method: str | None = Field(
        default=None, pattern=r"^[A-Z]{1,20}$", description="Only requests with this method, e.g. GET."
    )
    headers: MatchHeaders = Field(
        default=None,
        description='Only requests with each of these headers, its whole value (repeated headers joined with ", ") '
        "matching the regular expression; a plain value is an exact match.",
    )
    percent: float = Field(default=100, ge=0, le=100, description="Share of the matching requests faulted, 0-100.")
    abort: HttpAbortOptions | None = Field(default=None, description="Answer with a status, or reset the connection.")
    delay: HttpDelayOptions | None = Field(default=None, description="Delay the request.")
    replace: HttpReplaceOptions | None = Field(
        default=None, description="Replace the response's status, headers or body."
    )
    patch: HttpPatchOptions | None = Field(
        default=None, description="Add headers to, or JSON merge-patch, the response."
    )
    corrupt: HttpCorruptOptions | None = Field(
        default=None, description="Flip or replace bytes of the response body (data corruption)."
    )

    cel_rules = (
        (
            " + ".join(f"(has(self.{action}) ? 1 : 0)" for action in _ACTIONS) + " == 1",
            f"exactly one action is needed: {', '.join(_ACTIONS)}",
        ),
        ("!(has(self.path) && has(self.pathRegex))", "path and pathRegex exclude each other", ".pathRegex"),
        (
            " && ".join(f"self.port != {port}" for port in TLS_PORTS),
            "http-fault handles plain HTTP/1.1 only; ports 443 and 8443 carry TLS, which the proxy cannot read",
            ".port",
        ),
    )

    @property
    def action(self) -> str:
        """The one action given."""
        given = [name for name in _ACTIONS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"httpFault: exactly one action is needed: {', '.join(_ACTIONS)}; got {given or 'none'}")
        return given[0]
