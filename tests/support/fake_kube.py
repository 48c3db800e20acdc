"""An in-memory API server for unit tests: the one fake of ``coordinator.adapters.kube.KubeApi``.

Unit tests of code that reads and writes objects use this instead of writing their own client. It keeps objects
by their API path (``resource_path(kind, namespace, name)``) and answers as the API server does where our code
depends on it:

- ``get``/``get_or_none``/``list``/``list_summaries``: deep copies, so a caller cannot change what is stored;
  lists sorted by namespace and name, narrowed by ``labelSelector`` (the shared parser of
  ``coordinator.domain.labelselectors``) and by equality ``fieldSelector`` (``metadata.name=x``,
  ``spec.nodeName!=y``); a namespaced kind listed without a namespace lists every namespace.
- ``create``: 409 AlreadyExists; the namespace from the path; ``uid``, ``resourceVersion``, ``generation`` 1,
  ``creationTimestamp``; ``generateName``.
- ``patch``: JSON merge patch (RFC 7386) by default, a strategic merge patch (lists of named items merged by
  ``name``, as for containers) when asked; 404 when absent; ``metadata.resourceVersion`` in the patch is a
  precondition (409 Conflict when stale). The status subresource (``.../status``) changes only ``status``; the
  object's own path changes everything but ``status`` (for the kinds with a status subresource, as all of ours
  have). ``generation`` counts changes outside ``metadata`` and ``status``; every write bumps
  ``resourceVersion``.
- ``delete``: 404 when absent; ``preconditions`` (uid, resourceVersion) checked (409); an object with
  finalizers gets a ``deletionTimestamp`` and stays until a patch removes the last finalizer.
- ``GET /version``: ``version``; every request waits ``latency`` seconds first (a slow API server).
- ``watch``: the events of a collection after a ``resourceVersion`` (or ADDED for what exists), then new ones as
  they happen, until ``timeout_seconds`` of loop time pass.
- SubjectAccessReviews (``create`` of ``engine.authorization.SUBJECT_ACCESS_REVIEWS``): allowed, unless
  :meth:`FakeKube.refuse_access` refused that (user, verb, resource, namespace); recorded as verb ``review`` (not a
  write), nothing stored.
- The operator's mutating admission webhook, as far as runs depend on it: a ChaosScenario or TestRun stored without
  the requested-by annotation gets ``requester``'s (``FAKE_REQUESTER`` unless changed; None stores none).

Every request is recorded in ``calls`` (verb, path, body, params), every write in ``events`` (``written``
reads them by collection). ``fail`` makes chosen requests raise an ``ApiError`` (an API server that is down, a
conflict at just the wrong moment); ``before`` and ``after`` see each write before it is served (and may refuse
it) and after it is made (and may raise :class:`Crash`: the operator dies once the API server has the change),
for resume-after-crash tests.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import orjson

from coordinator.adapters.kube import (
    JSON,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_PATCH,
    ApiError,
    Listed,
    ListedItems,
    resource_path,
)
from coordinator.api.models import REQUESTED_BY_ANNOTATION, Requester
from coordinator.domain.labelselectors import parse_selector
from coordinator.domain.timestamps import format_iso_seconds
from coordinator.engine.authorization import SUBJECT_ACCESS_REVIEWS

# Collections whose objects have no status subresource: a write to the object's own path may set status.
NO_STATUS_SUBRESOURCE = frozenset({"events", "leases", "configmaps", "secrets", "serviceaccounts"})
SUBRESOURCES = frozenset({"status", "scale", "log", "eviction", "ephemeralcontainers"})

# Who created the runs and scenarios of unit tests, unless a test says otherwise.
FAKE_REQUESTER = Requester(username="tester", uid="tester-uid", groups=["system:authenticated"])
# The objects whose creator the admission webhook records.
_REQUESTED = re.compile(r"^/apis/chaos\.coordinator\.dev/[^/]+/namespaces/[^/]+/(testruns|chaosscenarios)/[^/]+$")
# .../namespaces/<namespace>/<plural>/<name>
_NAMESPACED = re.compile(r"^(?P<prefix>.*)/namespaces/(?P<namespace>[^/]+)/(?P<plural>[^/]+)/(?P<name>[^/]+)$")


def merge_patch(target: Any, patch: Any) -> Any:
    """``patch`` applied to ``target`` as a JSON merge patch (RFC 7386): objects merge key by key, ``null``
    removes a key, anything else (lists included) replaces. Neither argument is changed."""
    return _merged(target, patch, by_name=False)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch as far as our code sends one: a merge patch, except that lists of objects that
    all carry a ``name`` (containers, ephemeral containers, volumes, env) merge item by item on ``name``."""
    return _merged(target, patch, by_name=True)


def _merged(target: Any, patch: Any, by_name: bool) -> Any:
    if by_name and isinstance(patch, list) and isinstance(target, list) and _named(patch) and _named(target):
        merged = {item["name"]: copy.deepcopy(item) for item in target}
        for item in patch:
            merged[item["name"]] = _merged(merged.get(item["name"]), item, by_name)
        return list(merged.values())
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = copy.deepcopy(dict(target)) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merged(result.get(key), value, by_name)
    return result


def _named(items: list[Any]) -> bool:
    return all(isinstance(item, Mapping) and isinstance(item.get("name"), str) for item in items)


def _field(obj: Mapping[str, Any], dotted: str) -> str:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return "" if value is None else str(value)


def _field_selector_matches(obj: Mapping[str, Any], selector: str | None) -> bool:
    for requirement in (selector or "").split(","):
        if not requirement.strip():
            continue
        negated = "!=" in requirement
        key, _, value = requirement.replace("!=", "=").replace("==", "=").partition("=")
        if (_field(obj, key.strip()) == value.strip()) == negated:
            return False
    return True


@dataclass(frozen=True)
class Call:
    """One request as the fake received it: ``verb`` is ``get``, ``list``, ``watch``, ``create``, ``patch``,
    ``update`` (PUT), ``delete`` or ``review`` (a SubjectAccessReview); ``path`` is the object's own for a create
    (the collection's plus the name)."""

    verb: str
    path: str
    body: Any = None
    params: Mapping[str, Any] = field(default_factory=dict)
    """A list's query: ``labelSelector``, ``fieldSelector`` (those given), ``metadataOnly`` for a metadata list."""


@dataclass(frozen=True)
class Event:
    """One write as the server recorded it (what a watch sends): ``ADDED``, ``MODIFIED`` or ``DELETED``."""

    resource_version: int
    type: str
    path: str
    object: JSON


MUTATING = frozenset({"create", "patch", "update", "delete"})


class Crash(BaseException):
    """The operator process dies here: nothing after this call runs (it passes every ``except Exception``)."""


@dataclass
class _Failure:
    error: ApiError
    verb: str | None
    path: str | None
    times: int | None

    def applies(self, verb: str, path: str) -> bool:
        return (self.verb is None or self.verb == verb) and (self.path is None or self.path == path)


# (inside FakeKube, ``list`` names its method)
_Calls = list[Call]
_Objects = list[JSON]
_Failures = list[_Failure]
_Events = list[Event]


class FakeKube:
    """In-memory objects by API path, served with the API server's semantics (see the module docstring).

    Seed objects with :meth:`add`; read them back with :meth:`stored` (a copy) or ``objects`` (the stored dicts
    themselves, for a test that changes them as another writer would). ``now`` is the creation and deletion time stamped on objects; ``texts`` holds
    the plain-text answers of ``get_text`` by path (a container's log: ``.../pods/<name>/log``).
    """

    def __init__(self, now: datetime | None = None) -> None:
        self.objects: dict[str, JSON] = {}
        self.calls: _Calls = []
        self.texts: dict[str, str] = {}
        self.now = now or datetime(2026, 1, 1, tzinfo=UTC)
        self.resource_version = 0
        self._uids = 0
        self._failures: _Failures = []
        self.events: _Events = []
        self._changed: asyncio.Event | None = None
        self.before: Callable[[Call], None] | None = None
        """Called with each write before it is served; it may raise an ``ApiError`` to refuse it."""
        self.after: Callable[[Call], None] | None = None
        """Called with each write the server made; it may raise :class:`Crash` (the operator dies right then)."""
        self.latency = 0.0
        """Seconds (of loop time) each request takes before it is answered: a slow API server."""
        self.version: JSON = {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}
        """What ``GET /version`` answers."""
        self.requester: Requester | None = FAKE_REQUESTER
        """Recorded as the requester of a ChaosScenario or TestRun stored without one (None: not recorded)."""
        self.refused_access: set[tuple[str, str, str, str | None]] = set()
        """(user, verb, resource[/subresource], namespace or None) that SubjectAccessReviews refuse."""

    # --- seeding and inspecting ---------------------------------------------------------------------------

    def add(self, path: str, obj: JSON) -> JSON:
        """Store ``obj`` at ``path`` (an object's path, ``resource_path``) as the API server would after a create:
        ``uid``, ``generation``, ``creationTimestamp`` filled in when absent, a new ``resourceVersion``."""
        stored = copy.deepcopy(obj)
        metadata = stored.setdefault("metadata", {})
        if self.requester is not None and _REQUESTED.match(path):
            annotations = metadata.setdefault("annotations", {})
            annotations.setdefault(REQUESTED_BY_ANNOTATION, self.requester.to_annotation())
        metadata.setdefault("name", path.rsplit("/", 1)[1])
        if match := _NAMESPACED.match(path):
            metadata.setdefault("namespace", match["namespace"])
        metadata.setdefault("uid", self._next_uid())
        metadata.setdefault("generation", 1)
        metadata.setdefault("creationTimestamp", format_iso_seconds(self.now))
        self._write("ADDED", path, stored)
        return copy.deepcopy(stored)

    def stored(self, path: str) -> JSON:
        """The stored object at ``path`` (a copy); KeyError when absent."""
        return copy.deepcopy(self.objects[path])

    def written(self, type_: str, collection: str) -> _Objects:
        """The objects of ``collection`` as each write of ``type_`` left them, in order (``ADDED``: what was
        created, even when deleted since)."""
        return [
            copy.deepcopy(event.object)
            for event in self.events
            if event.type == type_ and self._in_collection(event.path, collection)
        ]

    def calls_of(self, verb: str | None = None, path: str | None = None) -> list[Call]:
        """The requests made (with ``verb``, to ``path``, when given), in order."""
        return [c for c in self.calls if (verb is None or c.verb == verb) and (path is None or c.path == path)]

    def mutations(self, verb: str | None = None, path: str | None = None) -> list[Call]:
        """The writes requested (creates, patches, updates, deletes), as :meth:`calls_of` selects them."""
        return [c for c in self.calls_of(verb, path) if c.verb in MUTATING]

    def fail(self, error: ApiError, *, verb: str | None = None, path: str | None = None, times: int | None = 1) -> None:
        """Make the next ``times`` requests (all of them with ``None``) that match ``verb`` and ``path`` raise
        ``error`` instead of being served. :meth:`recover` ends the failures."""
        self._failures.append(_Failure(error, verb, path, times))

    def recover(self) -> None:
        self._failures.clear()

    def refuse_access(self, user: str, verb: str, resource: str, namespace: str | None = None) -> None:
        """Make SubjectAccessReviews refuse ``user`` to ``verb`` ``resource`` (``pods/eviction`` for a
        subresource) in ``namespace`` (None: at the cluster scope). Everything else is allowed."""
        self.refused_access.add((user, verb, resource, namespace))

    def reviews(self) -> list[JSON]:
        """The ``spec.resourceAttributes`` of every SubjectAccessReview asked, in order."""
        return [c.body["spec"]["resourceAttributes"] for c in self.calls_of("review")]

    # --- the KubeApi protocol -------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str | int] | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        match method:
            case "GET":
                return await self.get(path, params)
            case "POST":
                return await self.create(path, body)
            case "PATCH":
                return await self.patch(path, body, content_type)
            case "PUT":
                return await self._replace(path, body)
            case "DELETE":
                return await self.delete(path, body)
        raise ApiError(405, "MethodNotAllowed", f"{method} {path}")

    async def get(self, path: str, params: Mapping[str, str | int] | None = None) -> JSON:
        await self._record("get", path, params=params)
        if path == "/version":
            return copy.deepcopy(self.version)
        if path in self.objects:
            return copy.deepcopy(self.objects[path])
        owner, _, subresource = path.rpartition("/")
        if subresource == "status" and owner in self.objects:
            return copy.deepcopy(self.objects[owner])
        if self._is_collection(path):
            items = self._items(path, (params or {}).get("labelSelector"), (params or {}).get("fieldSelector"))
            return {"kind": "List", "metadata": {"resourceVersion": str(self.resource_version)}, "items": items}
        raise _not_found(path)

    async def get_text(self, path: str, params: Mapping[str, str | int] | None = None) -> str:
        await self._record("get", path)
        if path not in self.texts:
            raise _not_found(path)
        return self.texts[path]

    async def get_or_none(self, path: str) -> JSON | None:
        try:
            return await self.get(path)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def list_summaries(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        metadata_only: bool = False,
    ) -> ListedItems:
        await self._record(
            "list",
            path,
            params={"labelSelector": label_selector, "fieldSelector": field_selector, "metadataOnly": metadata_only},
        )
        items = self._items(path, label_selector, field_selector)
        if metadata_only:
            items = [
                {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": item["metadata"]}
                for item in items
            ]
        return [Listed.of(msgspec.Raw(orjson.dumps(item))) for item in items]

    async def create(self, path: str, body: JSON) -> JSON:
        if path == SUBJECT_ACCESS_REVIEWS:
            return await self._review(body)
        metadata = dict(body.get("metadata") or {})
        if not metadata.get("name"):
            if not metadata.get("generateName"):
                raise ApiError(422, "Invalid", f"POST {path}: metadata.name or metadata.generateName is required")
            self._uids += 1
            metadata["name"] = f"{metadata['generateName']}{self._uids:05d}"
        item = f"{path}/{metadata['name']}"
        call = await self._record("create", item, body)
        if item in self.objects:
            raise ApiError(409, "AlreadyExists", f"{item} already exists", {"reason": "AlreadyExists"})
        metadata.pop("resourceVersion", None)
        for key in ("uid", "generation", "creationTimestamp", "deletionTimestamp"):
            metadata.pop(key, None)
        return self._made(call, self.add(item, {**body, "metadata": metadata}))

    async def patch(self, path: str, body: Any, content_type: str = MERGE_PATCH) -> JSON:
        call = await self._record("patch", path, body)
        owner, subresource = self._owner(path)
        current = self.objects[owner]
        if content_type == MERGE_PATCH:
            patched = merge_patch(current, body)
        elif content_type == STRATEGIC_PATCH:
            patched = strategic_merge_patch(current, body)
        else:
            kind = "a JSON patch" if content_type == JSON_PATCH else repr(content_type)
            raise ApiError(415, "UnsupportedMediaType", f"the fake API server does not apply {kind}")
        wanted = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, Mapping) else None
        return self._made(call, self._update(owner, subresource, current, patched, wanted))

    async def delete(self, path: str, body: JSON | None = None) -> JSON:
        call = await self._record("delete", path, body)
        if path not in self.objects:
            raise _not_found(path)
        obj = self.objects[path]
        metadata = obj["metadata"]
        preconditions = (body or {}).get("preconditions") or {}
        for key in ("uid", "resourceVersion"):
            if key in preconditions and preconditions[key] != metadata.get(key):
                raise ApiError(
                    409, "Conflict", f"{path}: precondition failed: {key} {preconditions[key]}", {"reason": "Conflict"}
                )
        if metadata.get("finalizers"):
            if not metadata.get("deletionTimestamp"):
                metadata["deletionTimestamp"] = format_iso_seconds(self.now)
                self._write("MODIFIED", path, obj)
            return self._made(call, copy.deepcopy(obj))
        return self._made(call, self._remove(path))

    async def watch(
        self,
        path: str,
        *,
        resource_version: str | None = None,
        timeout_seconds: int = 60,
        label_selector: str = "",
        field_selector: str = "",
    ) -> AsyncIterator[JSON]:
        await self._record("watch", path, params={"labelSelector": label_selector, "fieldSelector": field_selector})
        selector = parse_selector(label_selector)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        if resource_version is None:
            for item in self._items(path, label_selector, field_selector or None):
                yield {"type": "ADDED", "object": item}
            seen = self.resource_version
        else:
            seen = int(resource_version)
        while True:
            for event in self.events:
                if (
                    event.resource_version > seen
                    and self._in_collection(event.path, path)
                    and selector.matches(_labels(event.object))
                    and _field_selector_matches(event.object, field_selector or None)
                ):
                    yield {"type": event.type, "object": copy.deepcopy(event.object)}
            seen = max(seen, self.resource_version)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            changed = self._changed = self._changed or asyncio.Event()
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return

    # Last: inside the class body, ``list`` names this method.
    async def list(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> list[JSON]:
        await self._record("list", path, params={"labelSelector": label_selector, "fieldSelector": field_selector})
        return self._items(path, label_selector, field_selector)

    async def _review(self, body: JSON) -> JSON:
        await self._record("review", SUBJECT_ACCESS_REVIEWS, body)
        spec = body["spec"]
        attributes = spec["resourceAttributes"]
        resource = "/".join(part for part in (attributes["resource"], attributes.get("subresource")) if part)
        asked = (spec["user"], attributes["verb"], resource, attributes.get("namespace") or None)
        allowed = asked not in self.refused_access
        return {**body, "status": {"allowed": allowed, **({} if allowed else {"reason": "refused by the test"})}}

    # --- the server's bookkeeping -----------------------------------------------------------------------------

    async def _record(self, verb: str, path: str, body: Any = None, params: Mapping[str, Any] | None = None) -> Call:
        if self.latency:
            await asyncio.sleep(self.latency)
        call = Call(verb, path, copy.deepcopy(body), {k: v for k, v in (params or {}).items() if v})
        self.calls.append(call)
        for failure in self._failures:
            if failure.applies(verb, path):
                if failure.times is not None:
                    failure.times -= 1
                    if failure.times <= 0:
                        self._failures.remove(failure)
                raise failure.error
        if verb in MUTATING and self.before is not None:
            self.before(call)
        return call

    def _made(self, call: Call, result: JSON) -> JSON:
        """``result`` of a write the server made, once ``after`` has seen it (it may raise Crash)."""
        if self.after is not None:
            self.after(call)
        return result

    def _next_uid(self) -> str:
        self._uids += 1
        return f"uid-{self._uids}"

    def _write(self, kind: str, path: str, obj: JSON) -> None:
        self.resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self.resource_version)
        self.objects[path] = obj
        self.events.append(Event(self.resource_version, kind, path, copy.deepcopy(obj)))
        self._notify()

    def _remove(self, path: str) -> JSON:
        obj = self.objects.pop(path)
        self.resource_version += 1
        self.events.append(Event(self.resource_version, "DELETED", path, copy.deepcopy(obj)))
        self._notify()
        return obj

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _owner(self, path: str) -> tuple[str, str]:
        """The stored object a path writes to, and the subresource (``""`` for the object itself)."""
        if path in self.objects:
            return path, ""
        owner, _, subresource = path.rpartition("/")
        if subresource in SUBRESOURCES and owner in self.objects:
            return owner, subresource
        raise _not_found(path)

    def _update(self, path: str, subresource: str, current: JSON, wanted: JSON, precondition: str | None) -> JSON:
        if precondition is not None and precondition != current["metadata"].get("resourceVersion"):
            raise ApiError(
                409,
                "Conflict",
                f"Operation cannot be fulfilled on {path}: the object has been modified; please apply your changes "
                "to the latest version and try again",
                {"reason": "Conflict"},
            )
        has_status = self._collection_of(path).rsplit("/", 1)[1] not in NO_STATUS_SUBRESOURCE
        result = copy.deepcopy(current)
        if subresource == "status":
            result.pop("status", None)
            if "status" in wanted:
                result["status"] = copy.deepcopy(wanted["status"])
        elif subresource:
            raise ApiError(405, "MethodNotAllowed", f"the fake API server does not write {subresource} of {path}")
        else:
            status = current.get("status")
            result = copy.deepcopy(wanted)
            if has_status:
                result.pop("status", None)
                if status is not None:
                    result["status"] = copy.deepcopy(status)
            # What the server owns stays as it was.
            for key in ("name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp"):
                if key in current["metadata"]:
                    result["metadata"][key] = current["metadata"][key]
                else:
                    result["metadata"].pop(key, None)
            if _spec_of(result) != _spec_of(current):
                result["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
        if result == current:
            return copy.deepcopy(current)  # a no-op write keeps the resourceVersion, as the API server does
        if result["metadata"].get("deletionTimestamp") and not result["metadata"].get("finalizers"):
            self.objects[path] = result
            return copy.deepcopy(self._remove(path))
        self._write("MODIFIED", path, result)
        return copy.deepcopy(result)

    async def _replace(self, path: str, body: JSON) -> JSON:
        call = await self._record("update", path, body)
        owner, subresource = self._owner(path)
        current = self.objects[owner]
        wanted = copy.deepcopy(body)
        wanted.setdefault("metadata", {})
        precondition = wanted["metadata"].get("resourceVersion")
        return self._made(call, self._update(owner, subresource, current, wanted, precondition))

    # --- collections --------------------------------------------------------------------------------------------

    @staticmethod
    def _collection_of(path: str) -> str:
        return path.rsplit("/", 1)[0]

    def _in_collection(self, item_path: str, collection: str) -> bool:
        if self._collection_of(item_path) == collection:
            return True
        # A namespaced kind listed across namespaces: /api/v1/pods holds /api/v1/namespaces/x/pods/y.
        match = _NAMESPACED.match(item_path)
        return match is not None and f"{match['prefix']}/{match['plural']}" == collection

    @staticmethod
    def _is_collection(path: str) -> bool:
        """Whether ``path`` names a collection (``/api/v1/pods``, ``/apis/g/v/namespaces/x/things``), which the
        API server lists even when it is empty, rather than one object."""
        match = re.match(r"^(/api/v1|/apis/[^/]+/[^/]+)/(?P<rest>.+)$", path)
        if match is None:
            return False
        parts = match["rest"].split("/")
        return len(parts) == 1 or (len(parts) == 3 and parts[0] == "namespaces" and parts[2] not in SUBRESOURCES)

    def _items(self, path: str, label_selector: Any, field_selector: Any) -> _Objects:
        selector = parse_selector(str(label_selector or ""))
        found = [
            obj
            for item_path, obj in self.objects.items()
            if self._in_collection(item_path, path)
            and selector.matches(_labels(obj))
            and _field_selector_matches(obj, str(field_selector or ""))
        ]
        found.sort(key=lambda obj: (obj["metadata"].get("namespace") or "", obj["metadata"]["name"]))
        return copy.deepcopy(found)


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _spec_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What ``metadata.generation`` counts: everything but metadata and status."""
    return {key: value for key, value in obj.items() if key not in ("metadata", "status")}


def _not_found(path: str) -> ApiError:
    return ApiError(404, "NotFound", f"{path} not found", {"reason": "NotFound", "code": 404})


def path_of(obj: Mapping[str, Any]) -> str:
    """The API path of ``obj`` from its ``kind``, ``metadata.namespace`` and ``metadata.name`` (for ``add``)."""
    metadata = obj["metadata"]
    return resource_path(obj["kind"], metadata.get("namespace"), metadata["name"])


class RunClock:
    """The run engine's clock for runs on a FakeKube: time moves only when the run sleeps, so a step held for
    minutes takes no time."""

    def __init__(self) -> None:
        self.moment = datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment

    def time(self) -> float:
        return self.moment.timestamp()

    async def sleep(self, seconds: float) -> None:
        self.moment += timedelta(seconds=max(seconds, 0.001))


class LiveBody(Mapping[str, Any]):
    """kopf's live view of an object on a FakeKube: what the API server holds now (an abort shows at once)."""

    def __init__(self, kube: FakeKube, path: str) -> None:
        self.kube = kube
        self.path = path

    def _obj(self) -> dict[str, Any]:
        return self.kube.objects[self.path]

    def __getitem__(self, key: str) -> Any:
        return self._obj()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._obj())

    def __len__(self) -> int:
        return len(self._obj())
