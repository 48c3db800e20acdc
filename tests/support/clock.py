"""One clock for code under test and the test: the running event loop's, which looptime makes a fake one.

Code that measures deadlines with ``time.monotonic()`` while it waits with ``asyncio.sleep`` would see no time
pass under looptime (only the loop's clock is fake) and spin. :func:`use_loop_clock` points such a module's
``time`` at the loop's clock for one test, so both its sleeps and its deadlines run on the same fake time.
"""

from __future__ import annotations

import asyncio
from types import ModuleType, SimpleNamespace

import pytest


def use_loop_clock(monkeypatch: pytest.MonkeyPatch, *modules: ModuleType) -> None:
    """Make ``time.monotonic()`` in each of ``modules`` read the running event loop's clock, for this test only.

    Only the modules' own ``time`` name changes (not the ``time`` module), and only ``monotonic`` is offered: a
    module that reads any other ``time`` function fails loudly instead of mixing clocks.
    """
    loop = asyncio.get_running_loop()
    for module in modules:
        monkeypatch.setattr(module, "time", SimpleNamespace(monotonic=loop.time))
