"""Options of the in-pod faults (network shaping, stress, container kill), run by an ephemeral container.

See docs/inpod-faults.md for the mechanism and what each fault needs from the node's kernel.
"""

from __future__ import annotations

import re
from enum import StrEnum
from fractions import Fraction
from typing import Annotated

from pydantic import Field, field_validator

from coordinator.api.base import Model

Percent = Annotated[float, Field(ge=0, le=100)]


class TrafficDirection(StrEnum):
    EGRESS = "egress"
    INGRESS = "ingress"
    BOTH = "both"


class TrafficScopeOptions(Model):
    interface: str = Field(
        default="eth0", pattern=r"^[A-Za-z0-9_.@-]{1,15}$", description="The pod's network interface to shape."
    )
    cidrs: list[Annotated[str, Field(pattern=r"^[0-9a-fA-F:.]+/[0-9]{1,3}$")]] = Field(
        default_factory=list, max_length=32, description="Only traffic to (or from) these IP blocks; all when empty."
    )
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=list, max_length=32, description="Only traffic to these TCP/UDP ports; all when empty."
    )
    direction: TrafficDirection = Field(
        default=TrafficDirection.EGRESS,
        description="egress, ingress or both (tc-based faults shape egress only; loss and partition use nftables).",
    )


class NetworkDelayOptions(Model):
    latencyMs: int = Field(ge=1, le=60000, description="Added latency in milliseconds.")
    jitterMs: int = Field(default=0, ge=0, le=60000, description="Random variation of the latency in milliseconds.")
    correlationPercent: Percent = Field(default=0, description="How much each delay depends on the previous one.")
    scope: TrafficScopeOptions = Field(default_factory=TrafficScopeOptions, description="Which traffic.")


class NetworkPercentOptions(Model):
    percent: Percent = Field(description="Share of packets affected, 0-100.")
    correlationPercent: Percent = Field(default=0, description="How much each decision depends on the previous one.")
    scope: TrafficScopeOptions = Field(default_factory=TrafficScopeOptions, description="Which traffic.")


class NetworkBandwidthOptions(Model):
    rate: str = Field(
        pattern=r"^[0-9]+(\.[0-9]+)?([kmgtKMGT]i?)?(bit|bps)$",
        max_length=32,
        description="The rate limit, e.g. 1mbit or 500kbit (tc syntax).",
    )
    burstBytes: int | None = Field(default=None, ge=1, le=1 << 30, description="Bucket size in bytes.")
    limitBytes: int | None = Field(default=None, ge=1, le=1 << 30, description="Queue size in bytes.")
    scope: TrafficScopeOptions = Field(default_factory=TrafficScopeOptions, description="Which traffic.")


class CpuStressOptions(Model):
    workers: int = Field(default=1, ge=1, le=64, description="CPU workers (stress-ng --cpu).")
    loadPercent: int = Field(default=100, ge=1, le=100, description="Load per worker in percent.")


class MemoryStressOptions(Model):
    size: str = Field(
        default="256m", pattern=r"^([0-9]+[bkmgBKMG]?|[0-9]+(\.[0-9]+)?%)$", description="Memory per worker, e.g. 256m."
    )
    workers: int = Field(default=1, ge=1, le=64, description="Memory workers (stress-ng --vm).")


class IoStressOptions(Model):
    workers: int = Field(default=1, ge=1, le=64, description="IO workers (stress-ng --hdd).")
    size: str = Field(default="1g", pattern=r"^[0-9]+[bkmgBKMG]?$", description="Bytes written per worker.")


class ContainerKillOptions(Model):
    containerName: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63, description="The container whose process is killed."
    )
    signal: str = Field(
        default="SIGTERM",
        pattern=r"^SIG[A-Z0-9]+$",
        description="The signal. SIGKILL cannot reach a container's PID 1 from another container unless the pod "
        "shares its process namespace (shareProcessNamespace: true); SIGTERM works for most servers.",
    )


# The clock-skew offset: a sign, then a Go-style duration in whole seconds ("-1h", "+86400s", "90m").
CLOCK_OFFSET_PATTERN = r"^[+-]?([0-9]+(ms|s|m|h))+$"
MAX_CLOCK_OFFSET_SECONDS = 10 * 365 * 24 * 3600
_OFFSET_UNITS = {"ms": Fraction(1, 1000), "s": Fraction(1), "m": Fraction(60), "h": Fraction(3600)}


def clock_offset_seconds(text: str) -> int:
    """``"-1h"`` -> -3600; ValueError for anything that is not a non-zero whole number of seconds within 10 years.

    The skew adds whole seconds to what the target's clock reads (the vDSO patch adds to ``tv_sec``), so a
    fraction of a second is refused rather than rounded.
    """
    if not re.fullmatch(CLOCK_OFFSET_PATTERN, text):
        raise ValueError(f'offset "{text}" is not a signed duration such as -1h, +30m or +86400s')
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    seconds = Fraction(0)
    for number, unit in re.findall(r"([0-9]+)(ms|s|m|h)", body):
        seconds += Fraction(int(number)) * _OFFSET_UNITS[unit]
    if seconds.denominator != 1:
        raise ValueError(f'offset "{text}" is not a whole number of seconds')
    if seconds == 0:
        raise ValueError(f'offset "{text}" is zero: nothing to skew')
    if seconds > MAX_CLOCK_OFFSET_SECONDS:
        raise ValueError(f'offset "{text}" is more than 10 years (87600h)')
    return sign * int(seconds)


class ClockSkewOptions(Model):
    containerName: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="The container whose running processes see the skewed clock.",
    )
    offset: str = Field(
        pattern=CLOCK_OFFSET_PATTERN,
        max_length=32,
        description="Added to CLOCK_REALTIME (clock_gettime, gettimeofday, time) of the container's processes that "
        "run when the fault starts: a signed duration in whole seconds, e.g. -1h, +30m, +86400s; at most 87600h "
        "either way. Processes started later (kubectl exec date) and CLOCK_MONOTONIC are not shifted; x86-64 nodes "
        "only; the agent needs SYS_PTRACE.",
    )

    @field_validator("offset")
    @classmethod
    def _offset_in_bounds(cls, value: str) -> str:
        clock_offset_seconds(value)
        return value

    @property
    def offset_seconds(self) -> int:
        return clock_offset_seconds(self.offset)
