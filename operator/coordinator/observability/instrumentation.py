"""``@instrumented``: what every kopf handler gets around its call — RED metrics and the object's log context.

Used in ``handlers/registry.py`` under the kopf decorator::

    @kopf.daemon(GROUP, VERSION, "testruns", ...)
    @instrumented("testrun_daemon")
    async def testrun_daemon(body: kopf.Body, ...) -> None: ...

``functools.wraps`` keeps the handler's name, which kopf uses as the handler id in its progress annotations, so
wrapping never changes how an existing run resumes.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from contextlib import ExitStack
from typing import Any, TypeVar, cast

import structlog

from coordinator.observability import metrics
from coordinator.observability.logs import run_context

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def instrumented(handler: str) -> Callable[[F], F]:
    """Count, time and error-count the handler as ``handler``; bind the body's namespace/run/scenario to logs."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            body = kwargs.get("body")
            body = body if isinstance(body, Mapping) else None
            with ExitStack() as stack:
                stack.enter_context(structlog.contextvars.bound_contextvars(**run_context(body)))
                stack.enter_context(metrics.handler_timer(handler))
                uid = (body or {}).get("metadata", {}).get("uid")
                if body is not None and uid and body.get("kind") == "TestRun":
                    stack.enter_context(metrics.LIVE.executing(uid, body))
                return await fn(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
