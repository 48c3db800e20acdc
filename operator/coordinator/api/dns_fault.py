"""Options of ``dns-fault``: which names, and what their queries get (an error, a random address or a delay).

The agent's resolver (faults/inpod/programs/dns_fault.py) does the matching; docs/inpod-faults.md describes the
mechanism and its limits.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, model_validator

from coordinator.api.base import Model, duration_check, duration_field

# The syntax of one pattern: DNS name characters and the * wildcard, labels of 1-63, an optional trailing dot. The
# agent's resolver checks the same expression (programs/dns_fault.py PATTERN_SYNTAX; a unit test keeps them equal).
DNS_PATTERN = r"^[A-Za-z0-9_*-]{1,63}(\.[A-Za-z0-9_*-]{1,63})*\.?$"
MAX_DNS_DELAY = "60s"

DnsPattern = Annotated[str, Field(pattern=DNS_PATTERN, max_length=254)]


class DnsRcode(StrEnum):
    NXDOMAIN = "NXDOMAIN"
    SERVFAIL = "SERVFAIL"


class DnsErrorAction(Model):
    rcode: DnsRcode = Field(
        default=DnsRcode.NXDOMAIN,
        description="NXDOMAIN (the name does not exist) or SERVFAIL (the resolver failed; clients may retry).",
    )


class DnsRandomAction(Model):
    pass


class DnsDelayAction(Model):
    duration: Annotated[str, duration_field(MAX_DNS_DELAY, "1ms"), duration_check(MAX_DNS_DELAY, "1ms")] = Field(
        description="How long each matched query waits before it is forwarded (1ms to 60s), e.g. 2s."
    )


class DnsFaultOptions(Model):
    patterns: list[DnsPattern] = Field(
        min_length=1,
        max_length=64,
        description=(
            "Names whose queries get the fault, case-insensitive: an exact name (api.example.com); *.example.com "
            "for every name below example.com (a.example.com, a.b.example.com, not example.com); * inside a label "
            "for any characters within it (db-*.example.com); * alone for every name. Queries for other names "
            "are forwarded unchanged to the pod's nameservers."
        ),
    )
    error: DnsErrorAction | None = Field(default=None, description="Answer matched queries with this error.")
    random: DnsRandomAction | None = Field(
        default=None,
        description=(
            "Answer A and AAAA queries of matched names with a random address from the documentation ranges "
            "(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32: no host has one); other types get "
            "an empty answer."
        ),
    )
    delay: DnsDelayAction | None = Field(
        default=None, description="Delay matched queries, then forward them (their answers are the real ones)."
    )

    cel_rules = (
        (
            "(has(self.error) ? 1 : 0) + (has(self.random) ? 1 : 0) + (has(self.delay) ? 1 : 0) == 1",
            "exactly one of error, random and delay is required",
        ),
    )

    @model_validator(mode="after")
    def _one_action(self) -> DnsFaultOptions:
        if sum(action is not None for action in (self.error, self.random, self.delay)) != 1:
            raise ValueError("exactly one of error, random and delay is required")
        return self
