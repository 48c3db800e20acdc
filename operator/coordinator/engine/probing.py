"""Running a scenario's steady-state probes: point checks, sampling while faults hold, recovery tracking."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp
from aiohttp.abc import AbstractResolver

from coordinator.adapters.kube import KubeApi
from coordinator.api.probes import Probe, ProbeMode, ProbeType
from coordinator.domain.addresses import IPNetwork
from coordinator.domain.samples import Sample
from coordinator.domain.verdict import ProbeStats
from coordinator.engine import observers
from coordinator.engine.clock import SYSTEM_CLOCK, Clock
from coordinator.probes import cmd as cmd_probe
from coordinator.probes import grpc as grpc_probe
from coordinator.probes import http as http_probe
from coordinator.probes import k8s as k8s_probe
from coordinator.probes import prometheus as prometheus_probe
from coordinator.probes.base import ProbeRefused
from coordinator.probes.reach import GuardedResolver, guarded_session
from coordinator.settings import Settings

T = TypeVar("T")


async def together(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """``asyncio.gather``, except that the first exception (a refused probe) cancels the others at once."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


SAMPLED_MODES = {
    # mode -> sampled while faults are active / for the whole run
    ProbeMode.DURING: "active",
    ProbeMode.CONTINUOUS: "always",
}


@dataclass
class PointCheck:
    probe: Probe
    ok: bool
    message: str


@dataclass
class RecoveryTracker:
    """From the first applied change to the first moment every probe passes again (after one was seen failing)."""

    started: float  # epoch seconds
    impact_seen: bool = False
    recovered_at: float | None = None

    def observe(self, all_ok: bool, now: float) -> None:
        if not all_ok:
            self.impact_seen = True
        elif self.impact_seen and self.recovered_at is None:
            self.recovered_at = now

    @property
    def done(self) -> bool:
        return not self.impact_seen or self.recovered_at is not None

    @property
    def seconds(self) -> float | None:
        if not self.impact_seen:
            return 0.0
        if self.recovered_at is None:
            return None
        return round(max(0.0, self.recovered_at - self.started), 3)


@dataclass(frozen=True)
class ProbeReach:
    """What the probes of a run may reach: no object in ``protected`` namespaces (nor any Secret), no address in
    ``denied``. ``resolver`` replaces the system's name resolution (tests)."""

    protected: frozenset[str]
    denied: tuple[IPNetwork, ...]
    resolver: AbstractResolver | None = field(default=None, compare=False)

    @classmethod
    def of(cls, settings: Settings) -> ProbeReach:
        return cls(protected=settings.protected, denied=settings.probe_deny_cidrs)


def refusal(probe: Probe, namespace: str, reach: ProbeReach, prometheus_url: str | None = None) -> ProbeRefused | None:
    """Pure: why ``probe`` may not run at all, known before any sample (a denied IP literal, a Secret, a protected
    namespace); a name's addresses are checked each time it is resolved."""
    if probe.k8s is not None and probe.type == ProbeType.K8S:
        return k8s_probe.refusal(probe.k8s, namespace, reach.protected)
    if probe.http is not None and probe.type == ProbeType.HTTP:
        return http_probe.refusal(probe.http.url, reach.denied)
    if probe.prometheus is not None and probe.type == ProbeType.PROMETHEUS:
        endpoint = probe.prometheus.endpoint or prometheus_url
        if endpoint:
            return http_probe.refusal(endpoint, reach.denied, "prometheus.endpoint")
    if probe.grpc is not None and probe.type == ProbeType.GRPC:
        return grpc_probe.refusal(probe.grpc.address, reach.denied)
    if probe.cmd is not None and probe.type == ProbeType.CMD:
        return cmd_probe.namespace_refusal(namespace, reach.protected)
    return None


class ProbeSession:
    """The probes of one run, with their statistics; one HTTP session for the http and prometheus probes, one
    guarded resolver for the grpc probes. cmd probes create their Pods in ``namespace`` where ``namespaces`` (the
    targets' namespace policy) allows it, owned by ``run``.

    Raises ProbeRefused, naming the probe's field in ``owner``'s spec, when a probe asks for what no probe may do:
    at once for what the spec shows (see ``refusal``), and from any sample for what only resolving a name shows.
    """

    def __init__(
        self,
        client: KubeApi,
        probes: list[Probe],
        namespace: str,
        prometheus_url: str | None = None,
        *,
        reach: ProbeReach,
        owner: str = "ChaosScenario",
        clock: Clock = SYSTEM_CLOCK,
        correlation_id: str | None = None,
        namespaces: cmd_probe.NamespaceCheck | None = None,
        run: cmd_probe.RunOwner | None = None,
    ) -> None:
        if namespaces is None and any(p.type == ProbeType.CMD for p in probes):
            raise ValueError("cmd probes need the namespace policy that says where their Pods may run")
        self.namespaces = namespaces
        self.run = run
        self.client = client
        self.correlation_id = correlation_id  # the run's UID, sent with every http probe request
        self.clock = clock
        self.probes = probes
        self.namespace = namespace
        self.prometheus_url = prometheus_url
        self.reach = reach
        self.owner = owner
        self.stats = {p.name: ProbeStats.of(p) for p in probes}
        self._next_due: dict[str, float] = {}
        self._session: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None
        for probe in probes:
            refused = refusal(probe, namespace, reach, prometheus_url)
            if refused is not None:
                raise self._located(probe, refused)

    def _located(self, probe: Probe, refused: ProbeRefused) -> ProbeRefused:
        index = next(i for i, p in enumerate(self.probes) if p.name == probe.name)
        return refused.located(f"{self.owner}: spec.steadyState.probes[{index}]")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._resolver is not None:
            await self._resolver.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = guarded_session(self.reach.denied, self.reach.resolver)
        return self._session

    def _guarded_resolver(self) -> GuardedResolver:
        if self._resolver is None:
            self._resolver = GuardedResolver(self.reach.denied, self.reach.resolver)
        return self._resolver

    async def sample(self, probe: Probe) -> Sample:
        with observers.activity("probe", probe.name, type=str(probe.type), mode=str(probe.mode)) as check:
            try:
                sample = await self._sample(probe, check.span_id)
            except ProbeRefused as refused:
                raise self._located(probe, refused) from None
            check.set(ok=sample.ok, value=sample.value, latency_ms=sample.latency_ms)
            if not sample.ok:
                check.fail(sample.error or f"observed {sample.value}")
            return sample

    async def _sample(self, probe: Probe, span_id: str | None) -> Sample:
        """One sample; ``span_id`` (the probe check's span, with tracing on) is the parent of an http or grpc
        probe's ``traceparent``."""
        limit = probe.timeout_seconds
        if probe.type == ProbeType.K8S:
            assert probe.k8s is not None
            return await asyncio.wait_for(
                k8s_probe.sample(self.client, probe.k8s, self.namespace, self.reach.protected), limit + 1
            )
        if probe.type == ProbeType.HTTP:
            assert probe.http is not None
            return await http_probe.sample(
                self._http(), probe.http, limit, self.reach.denied, self.correlation_id, span_id
            )
        if probe.type == ProbeType.GRPC:
            assert probe.grpc is not None
            return await grpc_probe.sample(probe.grpc, limit, self._guarded_resolver(), self.correlation_id, span_id)
        if probe.type == ProbeType.CMD:
            assert probe.cmd is not None
            assert self.namespaces is not None
            return await cmd_probe.sample(
                self.client,
                probe.cmd,
                probe.name,
                self.namespace,
                limit,
                allowed=self.namespaces,
                protected=self.reach.protected,
                run=self.run,
            )
        assert probe.prometheus is not None
        return await prometheus_probe.sample(
            self._http(), probe.prometheus, self.prometheus_url, limit, self.reach.denied
        )

    async def point_check(self, modes: set[ProbeMode]) -> list[PointCheck]:
        """before/after checks: sample until successThreshold passes in a row, or failureThreshold failures."""
        chosen = [p for p in self.probes if p.mode in modes]
        return await together(self._check(p) for p in chosen)

    async def _check(self, probe: Probe) -> PointCheck:
        await self.clock.sleep(probe.initial_delay_seconds)
        interval = probe.interval_seconds
        stats = self.stats[probe.name]
        passes = fails = 0
        while True:
            sample = await self.sample(probe)
            stats.record(sample)
            observers.notify("probe_sampled", probe.name, sample)
            if sample.ok:
                passes, fails = passes + 1, 0
            else:
                passes, fails = 0, fails + 1
            if passes >= probe.successThreshold:
                stats.checked = True
                return PointCheck(probe, True, sample.value or "ok")
            if fails >= probe.failureThreshold:
                stats.checked = False
                return PointCheck(probe, False, sample.error or "failed")
            await self.clock.sleep(interval)

    async def tick(self, faults_active: bool, started: float) -> Probe | None:
        """Take the samples that are due; return a probe that has just failed and wants the run stopped."""
        now = self.clock.time()
        due = []
        for probe in self.probes:
            when = SAMPLED_MODES.get(ProbeMode(probe.mode))
            if when is None or (when == "active" and not faults_active):
                continue
            first = started + probe.initial_delay_seconds
            if now >= self._next_due.get(probe.name, first):
                due.append(probe)
                self._next_due[probe.name] = now + probe.interval_seconds
        samples = await together(self.sample(p) for p in due)
        stopping = None
        for probe, sample in zip(due, samples, strict=True):
            stats = self.stats[probe.name]
            stats.record(sample)
            observers.notify("probe_sampled", probe.name, sample)
            if probe.stopOnFailure and stats.tripped and stopping is None:
                stopping = probe
        return stopping

    async def all_pass(self) -> bool:
        """One unrecorded sample of every probe: is the system in its steady state right now?"""
        samples = await together(self.sample(p) for p in self.probes)
        return all(s.ok for s in samples)
