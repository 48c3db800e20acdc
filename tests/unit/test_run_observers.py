"""What the engine reports reaches its listeners only through ``engine/observers.py``: probe samples included."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, cast

import pytest

from coordinator import __version__
from coordinator.adapters.kube import KubeClient
from coordinator.api.probes import Probe, ProbeMode
from coordinator.domain.addresses import parse_cidrs
from coordinator.domain.runs import RunInfo
from coordinator.domain.samples import Sample
from coordinator.engine import observers
from coordinator.engine.probing import ProbeReach, ProbeSession
from coordinator.history.redis import LocalProgress, ProgressObserver
from coordinator.observability import metrics
from coordinator.observability.logs import RunLogger


class Recorder:
    """A run observer that keeps what it heard."""

    def __init__(self) -> None:
        self.samples: list[tuple[str, bool]] = []

    def run_started(self, run: RunInfo) -> None: ...

    def fault_injected(self, run: RunInfo, injection: Any) -> None: ...

    def fault_reverted(self, run: RunInfo, injection: Any) -> None: ...

    def run_finished(self, run: RunInfo, status: Any) -> None: ...

    def probe_sampled(self, probe: str, sample: Sample) -> None:
        self.samples.append((probe, sample.ok))

    def notification_sent(self, run: RunInfo, record: Any) -> None: ...


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    heard = Recorder()
    observers.register(heard)
    yield heard
    observers.unregister(heard)


def _session(*probes: Probe) -> ProbeSession:
    reach = ProbeReach(frozenset(), parse_cidrs("169.254.0.0/16"))
    return ProbeSession(cast(KubeClient, None), list(probes), "shop", reach=reach)


def _probe(name: str, mode: str) -> Probe:
    return Probe.model_validate(
        {"name": name, "mode": mode, "type": "http", "interval": "1s", "http": {"url": "http://web.shop/"}}
    )


async def test_sampled_and_checked_probes_are_reported(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    session = _session(_probe("web-during", "during"), _probe("web-before", "before"))
    outcomes = iter([False, True, True])

    async def sample(probe: Probe) -> Sample:
        return Sample(ok=next(outcomes), at=0.0)

    monkeypatch.setattr(session, "sample", sample)
    await session.tick(faults_active=True, started=0.0)
    checks = await session.point_check({ProbeMode.BEFORE})
    assert [c.ok for c in checks] == [True]
    assert recorder.samples == [("web-during", False), ("web-before", True)]
    assert session.stats["web-during"].failed == 1


async def test_the_recovery_check_is_not_reported(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """``all_pass`` takes unrecorded samples: neither the statistics nor the listeners count them."""
    session = _session(_probe("web", "during"))

    async def sample(probe: Probe) -> Sample:
        return Sample(ok=True, at=0.0)

    monkeypatch.setattr(session, "sample", sample)
    assert await session.all_pass()
    assert recorder.samples == []


def test_every_listener_the_operator_registers_takes_probe_samples(caplog: pytest.LogCaptureFixture) -> None:
    metrics.configure(instance="unit-tests")
    constant = {"service": "test-coordinator", "instance": "unit-tests", "version": __version__}

    def count(result: str) -> float:
        labels = {**constant, "probe": "web-ready", "result": result}
        return metrics.REGISTRY.get_sample_value("coordinator_probe_results_total", labels) or 0.0

    passed, failed = count("pass"), count("fail")
    listeners: list[observers.RunObserver] = [metrics.MetricsObserver(), RunLogger(), ProgressObserver(LocalProgress())]
    for listener in listeners:
        observers.register(listener)
    try:
        with caplog.at_level(logging.ERROR, logger="coordinator.engine.observers"):
            observers.notify("probe_sampled", "web-ready", Sample(ok=True, at=0.0))
            observers.notify("probe_sampled", "web-ready", Sample(ok=False, at=0.0, error="503"))
        assert (count("pass"), count("fail")) == (passed + 1, failed + 1)
    finally:
        for listener in listeners:
            observers.unregister(listener)
        metrics.configure(instance=metrics.SERVICE)
    assert not caplog.records, caplog.text
