"""The dashboard in a real browser (Debian's Chromium under Playwright) against the local cluster and the session
operator's history store."""

from __future__ import annotations

import urllib.request
from typing import Any

from support.chaos import Chaos
from support.dashboard import DESKTOP, PHONE, DashboardProcess, screenshot


def long_failure(app: str = "web") -> dict[str, Any]:
    return {
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": app}}},
        "mode": "one",
        "steps": [{"name": "hold", "duration": "120s", "faults": [{"type": "pod-failure"}]}],
    }


def test_every_response_carries_the_security_headers(dashboard: DashboardProcess) -> None:
    with urllib.request.urlopen(f"{dashboard.url}/") as response:  # noqa: S310 (http on loopback)
        headers = response.headers
        page = response.read().decode()
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "coordinator_csrf" in headers["Set-Cookie"]
    assert "SameSite=Strict" in headers["Set-Cookie"]
    assert '<script src="/static/app.js"' in page, "assets come from the dashboard itself, never a CDN"
    assert "http://" not in page.replace(dashboard.url, "")
    assert "https://" not in page


def test_the_overview_lists_an_active_run_at_desktop_and_phone_width(
    dashboard: DashboardProcess, browser: Any, workload: str, chaos: Chaos
) -> None:
    chaos.scenario("hold", long_failure())
    run = chaos.run("hold")
    chaos.wait_step(run, 0, "Injected", timeout=30)
    for name, size in (("overview-desktop", DESKTOP), ("overview-phone", PHONE)):
        page = browser.new_page(viewport=size)
        try:
            page.goto(f"{dashboard.url}/")
            row = page.locator(f'tr[data-run="{chaos.namespace}/{run}"]')
            row.wait_for(timeout=10_000)
            assert "Running" in row.inner_text()
            assert page.locator("header .viewer").inner_text().strip(), "the page says whose rights it uses"
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= size["width"], f"{name}: the page scrolls sideways ({width} px)"
            screenshot(page, name)
        finally:
            page.close()
