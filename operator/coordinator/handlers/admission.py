"""The admission webhooks: kopf's WebhookServer with our certificate, our configurations, and the handlers' bodies.

The decorators are in handlers/registry.py. The server serves with the certificate kept in a Secret
(engine/webhooks.py) and, each time it (re)starts listening, writes the webhook configurations with the current
caBundle: starting the operator is all it takes.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import tempfile
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aiohttp.web
import kopf

from coordinator.adapters.kube import ApiError, KubeApi, resource_path
from coordinator.api.models import REQUESTED_BY_ANNOTATION
from coordinator.domain.admission import annotation_of, controlling_owner, recorded_requester
from coordinator.engine.admission_rights import (
    scenario_admission_refusals,
    scenario_admission_warnings,
    testrun_admission_refusals,
    workflow_admission_refusals,
    workflow_problems,
)
from coordinator.engine.webhooks import (
    client_config_base,
    ensure_bundle,
    ensure_namespace,
    mark_serving,
    register,
    wait_until_served,
    write_files,
)
from coordinator.settings import Settings

log = logging.getLogger("coordinator.webhooks")

# An AdmissionReview of an update carries the object twice; the API server stores objects of up to 1.5 MiB.
MAX_REVIEW_BYTES = 4 * 1024 * 1024
# How often the stored certificate is checked for renewal (and a renewal by another replica picked up).
RENEWAL_CHECK_INTERVAL = 3600.0


class CoordinatorWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS webhook server that writes our webhook configurations whenever it starts serving (again)."""

    def __init__(self, client: KubeApi, settings: Settings, directory: Path) -> None:
        certfile, pkeyfile, cafile = directory / "tls.crt", directory / "tls.key", directory / "ca.crt"
        super().__init__(
            addr=settings.webhook_address,
            port=settings.webhook_port,
            host=settings.webhook_host,
            certfile=certfile,
            pkeyfile=pkeyfile,
            cafile=cafile,
            file_check_interval=10.0,
        )
        self._client = client
        self._settings = settings
        # Set once the configurations point here: the operator reports ready only then.
        self.registered = asyncio.Event()

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        """Serve until stopped; (re)start, and write the configurations, whenever the certificate files change.

        kopf's own loop, but for the request size: its aiohttp default (1 MiB) refused the AdmissionReview of a
        ChaosScenario the API server stores (up to 1.5 MiB, twice in an update's review) with 413.
        """

        async def serve(request: aiohttp.web.Request) -> aiohttp.web.Response:
            return await self._serve(fn, request)

        while True:
            cadata, context = self._build_ssl()
            app = aiohttp.web.Application(client_max_size=MAX_REVIEW_BYTES)
            app.add_routes([aiohttp.web.post("/{id:.*}", serve)])
            runner = aiohttp.web.AppRunner(app, handle_signals=False)
            await runner.setup()
            try:
                site = aiohttp.web.TCPSite(
                    runner, self.addr, self.port, ssl_context=context, reuse_port=True, reuse_address=True
                )
                await site.start()
                bundle = base64.b64encode(cadata or b"").decode()
                await register(self._client, self._settings, bundle)
                await mark_serving(self._client, self._settings, True)
                await wait_until_served(self._client, self._settings)
                self.registered.set()
                yield cast(kopf.WebhookClientConfig, {**client_config_base(self._settings), "caBundle": bundle})
                await self._WebhookServer__sleep_forever_or_until_ssl_files_change()  # type: ignore[attr-defined]
                log.info("webhook certificate files changed: serving the renewed certificate")
            finally:
                await runner.cleanup()


async def operator_username(client: KubeApi) -> str | None:
    """Who the operator is to the API server (a SelfSubjectReview): the runs this subject creates for a scenario
    it controls inherit the scenario's requester."""
    try:
        review = await client.create(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
    except ApiError as exc:
        log.warning("could not learn the operator's own user name (%s): scheduled runs are recorded as its own", exc)
        return None
    username = ((review.get("status") or {}).get("userInfo") or {}).get("username")
    return str(username) if username else None


async def start_webhooks(client: KubeApi, settings: Settings) -> tuple[CoordinatorWebhookServer, str | None, Path]:
    """Make sure the certificate is there and current, and build the server that serves and registers the webhooks."""
    if not settings.webhook_service:
        await ensure_namespace(client, settings.namespace)
    bundle = await ensure_bundle(client, settings, datetime.now(UTC))
    directory = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="coordinator-webhook-"))
    await asyncio.to_thread(write_files, bundle, directory)
    return CoordinatorWebhookServer(client, settings, directory), await operator_username(client), directory


async def renew_forever(client: KubeApi, settings: Settings, directory: Path) -> None:
    """Renew the stored certificate before it expires and serve what is stored (the server restarts on change)."""
    while True:
        await asyncio.sleep(RENEWAL_CHECK_INTERVAL)
        try:
            bundle = await ensure_bundle(client, settings, datetime.now(UTC))
            await asyncio.to_thread(write_files, bundle, directory)
        except (ApiError, OSError) as exc:
            log.warning("webhook certificate check failed (%s); trying again in %.0fs", exc, RENEWAL_CHECK_INTERVAL)


async def handle_record_requester(
    client: KubeApi,
    operation: str,
    userinfo: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    patch: kopf.Patch,
    operator: str | None,
) -> None:
    """Set the requested-by annotation to what :func:`recorded_requester` says, whatever the request carried."""
    inherited = None
    owner = controlling_owner(new)
    if operation == "CREATE" and operator and userinfo.get("username") == operator and owner is not None:
        namespace = str((new.get("metadata") or {}).get("namespace") or "")
        kind, name, uid = owner
        found = await client.get_or_none(resource_path(kind, namespace, name))
        if found is not None and found["metadata"].get("uid") == uid:
            inherited = annotation_of(found)
    value = recorded_requester(operation, userinfo, old, new, inherited)
    if value != annotation_of(new):
        patch.metadata.annotations[REQUESTED_BY_ANNOTATION] = value  # None removes it


async def handle_validate_testrun(
    client: KubeApi, settings: Settings, body: Mapping[str, Any], userinfo: Mapping[str, Any], operator: str | None
) -> None:
    """Refuse a TestRun whose requester may not do what its scenario would do (403, naming every refusal).

    A run the operator creates for a scenario or workflow it controls (scheduled, run-now, triggered), or as a
    workflow run's child, is let through: its owner was checked when its requester last changed it, and the run
    checks again before it injects anything, ending Forbidden, on the record, if a right is gone since (a refused
    creation would leave no trace of the tick).
    """
    if operator and userinfo.get("username") == operator and controlling_owner(body) is not None:
        return
    refusals = await testrun_admission_refusals(client, settings, body)
    if refusals:
        raise kopf.AdmissionError("; ".join(refusals), code=403)


async def handle_validate_scenario(
    client: KubeApi, settings: Settings, body: Mapping[str, Any], warnings: list[str]
) -> None:
    """Refuse a ChaosScenario whose requester may not do what it would do (403, naming every refusal). Add a
    warning (kubectl prints it) for each fault that does not serve the scenario's type."""
    warnings += scenario_admission_warnings(body)
    refusals = await scenario_admission_refusals(client, settings, body)
    if refusals:
        raise kopf.AdmissionError("; ".join(refusals), code=403)


async def handle_validate_workflow(client: KubeApi, settings: Settings, body: Mapping[str, Any]) -> None:
    """Refuse a ChaosWorkflow whose DAG is invalid (422) or whose requester may not run a node's scenario (403)."""
    problems = workflow_problems(body)
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=422)
    refusals = await workflow_admission_refusals(client, settings, body)
    if refusals:
        raise kopf.AdmissionError("; ".join(refusals), code=403)


async def unmark_serving(client: KubeApi, settings: Settings) -> None:
    """Take this replica's pod out of the webhook Service (a stopping leader; best effort)."""
    try:
        await mark_serving(client, settings, False)
    except ApiError as exc:
        log.warning("could not clear the webhook label from this pod: %s", exc)
