"""Namespaces outside the session prefix, for tests that run their own operator processes (HA, RBAC).

The session operator watches only ``<session prefix>-*``; these namespaces use another prefix so that exactly the
test's own operators handle their TestRuns. Teardown releases our finalizer from any TestRun left behind (its
operator may be dead by then) so the namespace never hangs in Terminating.
"""

from __future__ import annotations

import uuid
from types import TracebackType

from kubernetes import client
from kubernetes.client.rest import ApiException

from support.chaos import GROUP, VERSION

OPT_IN = {"chaos.coordinator.dev/allow": "true"}


class ForeignNamespaces:
    """Create namespaces named ``<prefix>-<random>[-suffix]``; delete them (and release their TestRuns) on exit."""

    def __init__(self, api_client: client.ApiClient, prefix: str) -> None:
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.base = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.made: list[str] = []

    def make(self, suffix: str = "", labels: dict[str, str] | None = None) -> str:
        name = f"{self.base}-{suffix}" if suffix else self.base
        meta = client.V1ObjectMeta(name=name, labels={"test": "e2e", **(labels or {})})
        self.core.create_namespace(client.V1Namespace(metadata=meta))
        self.made.append(name)
        return name

    def release_runs(self) -> None:
        for namespace in self.made:
            runs = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "testruns")["items"]
            for run in runs:
                try:
                    self.custom.patch_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        namespace,
                        "testruns",
                        run["metadata"]["name"],
                        {"metadata": {"finalizers": None}},
                    )
                except ApiException as exc:
                    if exc.status != 404:
                        raise

    def __enter__(self) -> ForeignNamespaces:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release_runs()
        for namespace in self.made:
            try:
                self.core.delete_namespace(namespace)
            except ApiException as error:
                if error.status != 404:
                    raise
