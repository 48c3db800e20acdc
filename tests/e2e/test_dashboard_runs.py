"""A run's page in a real browser (Debian's Chromium under Playwright): the timeline gaining its injection and revert
live, abort from the page, a workflow run's DAG, and a run read back from the history store once it is gone."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from test_workflows import hold, run_workflow, workflow

from coordinator.testing.waiting import wait_for
from support.chaos import TERMINAL, Chaos, ready_probe
from support.dashboard import DESKTOP, PHONE, DashboardProcess, screenshot

LIVE_MS = 20_000  # how long a test waits for the page to show what the cluster already shows


def watched_hold(seconds: str = "4s", delay: str = "5s") -> dict[str, Any]:
    """pod-failure on one pod of web for ``seconds``, with a continuous probe (marks on the timeline) and a
    baseline that waits ``delay`` first, so that the page is open before anything is injected."""
    baseline = ready_probe("baseline", mode="before", initialDelay=delay)
    sampled = ready_probe("web-ready", mode="continuous", interval="1s")
    return {
        **hold("web", seconds),
        "steadyState": {"probes": [baseline, sampled]},
        "assertions": [{"name": "web-up", "type": "availability", "probe": "web-ready", "expected": 0}],
    }


def all_reverted(chaos: Chaos, run: str) -> None:
    injections = chaos.status(run).get("injections") or []
    assert injections, "the run changed something"
    assert {i["state"] for i in injections} <= {"Reverted", "Irreversible"}, injections


def test_the_timeline_gains_its_injection_and_revert_live(
    dashboard: DashboardProcess, browser: Any, workload: str, chaos: Chaos
) -> None:
    chaos.scenario("watched", watched_hold())
    run = chaos.run("watched")
    page = browser.new_page(viewport=DESKTOP)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"{dashboard.url}/runs/{chaos.namespace}/{run}")
        assert page.locator("[data-injection-id]").count() == 0, "loaded before anything was injected"
        assert page.locator("header .viewer").inner_text().strip(), "the page says whose rights it uses"
        page.locator('#live[data-state="open"]').wait_for(timeout=LIVE_MS)
        loads = page.evaluate("performance.getEntriesByType('navigation').length")

        applied = page.locator('svg.timeline rect[data-injection-state="Applied"]')
        applied.first.wait_for(timeout=LIVE_MS)
        target = applied.first.get_attribute("data-target")
        assert target is not None
        assert target.startswith(f"Pod/{chaos.namespace}/web-"), target
        assert page.locator('svg.timeline rect[data-step="hold"][data-outcome="Injected"]').count() == 1

        page.locator('svg.timeline rect[data-injection-state="Reverted"]').first.wait_for(timeout=LIVE_MS)
        reverted = page.locator('svg.timeline rect[data-injection-state="Reverted"]')
        assert reverted.first.get_attribute("data-target") == target, "the revert is drawn on the target's row"
        page.locator('#run[data-phase="Passed"]').wait_for(timeout=LIVE_MS)
        assert page.evaluate("performance.getEntriesByType('navigation').length") == loads
        assert page.url.endswith(f"/runs/{chaos.namespace}/{run}"), "updated in place, never reloaded"
        assert int(page.locator("#run").get_attribute("data-updates") or 0) >= 3, "each change arrived as an event"

        assert page.locator('svg.timeline rect[data-probe="web-ready"][data-ok="true"]').count() >= 2
        assert page.locator('svg.timeline rect[data-recovery-step="hold"]').count() == 1
        assert page.locator("#run-phase").inner_text() == "Passed"
        assert page.locator('#verdict [data-field="reason"]').inner_text() == "Completed"
        assert page.locator('#verdict [data-field="score"]').inner_text().strip().isdigit()
        row = page.locator('#assertions tr[data-assertion="web-up"]')
        assert row.get_attribute("data-passed") == "true"
        assert ">= 0" in row.inner_text()
        assert page.locator("#abort-form").is_hidden(), "nothing to abort once the run has ended"
        screenshot(page, "run-desktop")
        page.set_viewport_size(PHONE)
        page.reload()
        page.locator('svg.timeline rect[data-injection-state="Reverted"]').first.wait_for(timeout=LIVE_MS)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the run page scrolls sideways on a phone ({width} px)"
        screenshot(page, "run-phone")
        assert errors == [], "the page's script raised"
    finally:
        page.close()

    # Once the TestRun is gone, its page is what the history store kept.
    wait_for(
        lambda: (chaos.status(run).get("history") or {}).get("synced"),
        timeout=30,
        description=f"TestRun {run} in the history store",
    )
    chaos.custom.delete_namespaced_custom_object("chaos.coordinator.dev", "v1alpha1", chaos.namespace, "testruns", run)
    wait_for(lambda: not chaos.run_exists(run), timeout=30, description=f"TestRun {run} deleted")
    page = browser.new_page(viewport=DESKTOP)
    try:
        page.goto(f"{dashboard.url}/runs/{chaos.namespace}/{run}")
        assert page.locator("#from-history").is_visible()
        assert page.locator("#run-phase").inner_text() == "Passed"
        assert page.locator(f'svg.timeline rect[data-injection-state="Reverted"][data-target="{target}"]').count() == 1
    finally:
        page.close()


def test_abort_from_the_page_ends_the_run_cancelled_with_everything_reverted(
    dashboard: DashboardProcess, browser: Any, workload: str, chaos: Chaos
) -> None:
    sampled = ready_probe("web-ready", mode="continuous", interval="1s")
    chaos.scenario("long", {**hold("web", "120s"), "steadyState": {"probes": [sampled]}})
    run = chaos.run("long")
    chaos.wait_step(run, 0, "Injected", timeout=30)
    page = browser.new_page(viewport=DESKTOP)
    questions: list[str] = []

    def accept(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    try:
        page.goto(f"{dashboard.url}/runs/{chaos.namespace}/{run}")
        page.locator('svg.timeline rect[data-injection-state="Applied"]').first.wait_for(timeout=LIVE_MS)
        # Samples taken while the fault holds reach the page long before the step ends (every 10 s).
        page.locator('svg.timeline rect[data-probe="web-ready"]').first.wait_for(timeout=LIVE_MS)
        assert page.locator('svg.timeline rect[data-injection-state="Reverted"]').count() == 0, "still holding"
        with page.expect_navigation():
            page.locator("#abort").click()
        assert questions == [
            f"Abort run {chaos.namespace}/{run}? Every change it made is reverted and it ends Cancelled."
        ]
        assert page.url.endswith(f"/runs/{chaos.namespace}/{run}"), "back on the run page"
        assert chaos.get_run(run)["spec"]["abort"] is True
        page.locator('#run[data-phase="Cancelled"]').wait_for(timeout=LIVE_MS)
        page.locator('svg.timeline rect[data-injection-state="Reverted"]').first.wait_for(timeout=LIVE_MS)
        assert page.locator('svg.timeline rect[data-injection-state="Applied"]').count() == 0
        assert page.locator('#verdict [data-field="reason"]').inner_text() == "Aborted"
    finally:
        page.close()
    assert chaos.status(run)["phase"] == "Cancelled"
    all_reverted(chaos, run)


def test_abort_without_the_csrf_token_is_refused(dashboard: DashboardProcess, browser: Any, chaos: Chaos) -> None:
    page = browser.new_page()
    try:
        page.goto(f"{dashboard.url}/healthz")
        response = page.request.post(f"{dashboard.url}/runs/{chaos.namespace}/any/abort", form={"csrf": "forged"})
        assert response.status == 403
        assert "CSRF" in response.text()
    finally:
        page.close()


def test_an_abort_the_api_server_refuses_shows_its_message(
    dashboard: DashboardProcess, browser: Any, chaos: Chaos
) -> None:
    page = browser.new_page()
    try:
        page.goto(f"{dashboard.url}/")
        token = page.locator('meta[name="csrf-token"]').get_attribute("content")
        response = page.request.post(
            f"{dashboard.url}/runs/{chaos.namespace}/no-such-run/abort", form={"csrf": token or ""}
        )
        assert response.status == 404
        refusal = page.locator("#action-refused")
        page.set_content(response.text())
        assert "no-such-run" in refusal.inner_text()
        assert "not found" in refusal.inner_text(), "the API server's own message"
    finally:
        page.close()


def test_a_workflow_run_page_shows_its_dag_live(
    dashboard: DashboardProcess, browser: Any, workload: str, chaos: Chaos
) -> None:
    chaos.scenario("short", hold("web", "2s"))
    workflow(
        chaos,
        "game-day",
        [
            {"name": "first", "scenarioRef": {"name": "short"}},
            {"name": "wait", "suspend": {"duration": "2s"}},
            {"name": "second", "scenarioRef": {"name": "short"}, "dependsOn": ["first", "wait"]},
        ],
    )
    parent = run_workflow(chaos, "game-day", "gd-run")
    page = browser.new_page(viewport=DESKTOP)
    try:
        wait_for(lambda: chaos.status(parent).get("nodes"), timeout=30, description="the workflow run's nodes")
        page.goto(f"{dashboard.url}/runs/{chaos.namespace}/{parent}")
        assert page.locator("h1").inner_text().startswith("Workflow run")
        for name, depth in (("first", "0"), ("wait", "0"), ("second", "1")):
            assert page.locator(f'svg.dag g[data-node="{name}"]').get_attribute("data-depth") == depth
        assert page.locator('svg.dag path[data-edge="first->second"]').count() == 1
        page.locator('svg.dag g[data-node="second"][data-phase="Passed"]').wait_for(timeout=60_000)
        page.locator('#run[data-phase="Passed"]').wait_for(timeout=LIVE_MS)
        for name in ("first", "wait"):
            assert page.locator(f'svg.dag g[data-node="{name}"]').get_attribute("data-phase") == "Passed"
        screenshot(page, "workflow-run")
        with page.expect_navigation():
            page.locator('svg.dag g[data-node="first"]').click()
        assert page.url.endswith(f"/runs/{chaos.namespace}/{parent}-first"), "a node links to its child run"
        assert page.locator('svg.timeline rect[data-injection-state="Reverted"]').count() >= 1
    finally:
        page.close()


def run_watches(kubeconfig: Path) -> int:
    """The API server's open watches of one TestRun by name (a field selector on metadata.name: scope resource)."""
    metrics = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", "--raw", "/metrics"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(
        r'^apiserver_longrunning_requests\{[^}]*resource="testruns",scope="resource",[^}]*verb="WATCH"[^}]*\} (\d+)',
        metrics,
        re.MULTILINE,
    )
    return int(found.group(1)) if found else 0


def test_the_runs_watch_closes_when_the_browser_goes_away(
    dashboard: DashboardProcess, browser: Any, kubeconfig: Path, chaos: Chaos
) -> None:
    chaos.scenario("idle", hold("web", "1s"))
    run = chaos.run("idle", dryRun=True)
    chaos.wait_phase(run, TERMINAL, timeout=30)
    before = wait_for(lambda: (run_watches(kubeconfig),), timeout=5, description="the API server's metrics")[0]
    page = browser.new_page()
    try:
        page.goto(f"{dashboard.url}/runs/{chaos.namespace}/{run}")
        page.locator('#live[data-state="open"]').wait_for(timeout=LIVE_MS)
        wait_for(lambda: run_watches(kubeconfig) > before, timeout=10, description="the page's watch open")
    finally:
        page.close()
    wait_for(lambda: run_watches(kubeconfig) <= before, timeout=20, description="the page's watch closed")


def test_a_run_started_from_the_scenario_form_shows_its_injection_and_revert_live(
    dashboard: DashboardProcess, browser: Any, workload: str, chaos: Chaos
) -> None:
    spec = watched_hold(seconds="{{ params.hold }}")
    spec["parameters"] = [{"name": "hold", "type": "duration", "default": "3s", "description": "How long it holds."}]
    chaos.scenario("started-here", spec)
    page = browser.new_page(viewport=DESKTOP)
    try:
        page.on("dialog", lambda dialog: dialog.accept())  # the confirmation every action asks for
        page.goto(f"{dashboard.url}/scenarios/{chaos.namespace}/started-here")
        assert page.locator("#param-hold").input_value() == "3s"
        page.locator("#param-hold").fill("4s")
        page.locator("#start-form button[type=submit]").click()
        page.wait_for_url(re.compile(rf"/runs/{chaos.namespace}/started-here-[a-z0-9]+$"), timeout=LIVE_MS)
        run = page.url.rsplit("/", 1)[1]
        assert chaos.get_run(run)["spec"]["parameters"] == {"hold": "4s"}
        page.locator('#live[data-state="open"]').wait_for(timeout=LIVE_MS)
        page.locator('svg.timeline rect[data-injection-state="Applied"]').first.wait_for(timeout=LIVE_MS)
        page.locator('svg.timeline rect[data-injection-state="Reverted"]').first.wait_for(timeout=LIVE_MS)
        page.locator('#run[data-phase="Passed"]').wait_for(timeout=LIVE_MS)
        assert page.locator('svg.timeline rect[data-injection-state="Applied"]').count() == 0
        all_reverted(chaos, run)
    finally:
        page.close()
