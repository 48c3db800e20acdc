"""An in-memory API server for unit tests of pure engine logic, typed as the operator's ``KubeClient``.

Objects are kept by their API path (``resource_path``). It behaves as the API server does where the engine
relies on it: JSON merge patches (RFC 7386), resourceVersion preconditions (409), delete preconditions on the
uid (409), 404 for what is missing, the ``status`` subresource, generations, and label and field selectors on
lists. Every mutating call is logged, so a test can say what was changed how many times.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from coordinator.adapters.kube import ApiError, Listed
from coordinator.domain.sharding import parse_shard_selector

JSON = dict[str, Any]
_COLLECTION = re.compile(r"^(?P<prefix>/apis?/[^/]+(?:/[^/]+)?)(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)$")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: ``patch`` applied to ``target`` (neither is changed)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class Call:
    verb: str
    path: str
    body: Any = None


class Crash(BaseException):
    """The operator process dies here: nothing after this call runs (raised past every ``except Exception``)."""


@dataclass
class FakeKube:
    objects: dict[str, JSON] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    events: list[JSON] = field(default_factory=list)
    # Called before each mutating call (it may raise an ApiError to refuse it), and after each successful one
    # (it may raise Crash: the process dies once the API server has made the change).
    before: Callable[[Call], None] | None = None
    after: Callable[[Call], None] | None = None
    _versions: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # --- set-up -------------------------------------------------------------------------------------------

    def add(self, path: str, obj: JSON) -> JSON:
        """Store ``obj`` at ``path`` (an object's path) as the API server would after a create."""
        stored = copy.deepcopy(obj)
        meta = stored.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._versions)}")
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[path] = stored
        return copy.deepcopy(stored)

    def stored(self, path: str) -> JSON:
        return copy.deepcopy(self.objects[path])

    def mutations(self, verb: str | None = None, path: str | None = None) -> list[Call]:
        return [c for c in self.calls if (verb is None or c.verb == verb) and (path is None or c.path == path)]

    # --- the KubeClient interface the engine uses ------------------------------------------------------------

    def _asked(self, call: Call) -> None:
        if self.before is not None:
            self.before(call)

    def _done(self, call: Call) -> None:
        self.calls.append(call)
        if self.after is not None:
            self.after(call)

    @staticmethod
    def _split(path: str) -> tuple[str, str]:
        """(object path, subresource) for a path that may end in /status or /scale."""
        for sub in ("status", "scale"):
            if path.endswith(f"/{sub}") and path.count("/") > 3:
                base = path[: -len(sub) - 1]
                if _COLLECTION.match(base) is None:  # an object path, not a collection named "status"
                    return base, sub
        return path, ""

    def _get(self, path: str) -> JSON:
        base, _ = self._split(path)
        if base not in self.objects:
            raise ApiError(404, "NotFound", f"{base} not found")
        return self.objects[base]

    async def get(self, path: str, params: Mapping[str, str | int] | None = None) -> JSON:
        if _COLLECTION.match(path) and path not in self.objects:
            return {"items": self._list(path, params or {})}
        return copy.deepcopy(self._get(path))

    async def get_or_none(self, path: str) -> JSON | None:
        try:
            return await self.get(path)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    def _list(self, path: str, params: Mapping[str, Any]) -> list[JSON]:
        match = _COLLECTION.match(path)
        if match is None:
            raise ApiError(404, "NotFound", f"{path} is no collection")
        prefix, namespace, plural = match["prefix"], match["ns"], match["plural"]
        pattern = re.compile(
            rf"^{re.escape(prefix)}"
            + (rf"/namespaces/{re.escape(namespace)}" if namespace else r"(?:/namespaces/[^/]+)?")
            + rf"/{re.escape(plural)}/[^/]+$"
        )
        labels = str(params.get("labelSelector") or "")
        fields = str(params.get("fieldSelector") or "")
        items = []
        for key in sorted(self.objects):
            obj = self.objects[key]
            if not pattern.match(key):
                continue
            if labels and not parse_shard_selector(labels).matches(obj.get("metadata", {}).get("labels") or {}):
                continue
            if fields and not _fields_match(fields, obj):
                continue
            items.append(copy.deepcopy(obj))
        return items

    async def list(
        self, path: str, *, label_selector: str | None = None, field_selector: str | None = None, page_size: int = 500
    ) -> list[JSON]:
        return self._list(path, {"labelSelector": label_selector, "fieldSelector": field_selector})

    async def list_summaries(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        metadata_only: bool = False,
    ) -> list[Listed]:
        items = self._list(path, {"labelSelector": label_selector, "fieldSelector": field_selector})
        if metadata_only:
            items = [{"metadata": item["metadata"]} for item in items]
        return [Listed.of(msgspec.Raw(msgspec.json.encode(item))) for item in items]

    async def create(self, path: str, body: JSON) -> JSON:
        self._asked(Call("create", path, body))
        if path.endswith("/events"):
            self.events.append(copy.deepcopy(body))
            self._done(Call("create", path, body))
            return copy.deepcopy(body)
        name = body.get("metadata", {}).get("name")
        target = f"{path}/{name}"
        if target in self.objects:
            raise ApiError(409, "AlreadyExists", f"{target} already exists")
        created = self.add(target, body)
        self._done(Call("create", target, body))
        return created

    async def patch(self, path: str, body: Any, content_type: str = "") -> JSON:
        self._asked(Call("patch", path, body))
        obj = self._get(path)
        base, sub = self._split(path)
        wanted = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, Mapping) else None
        if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f"{base}: the object has been modified")
        if sub == "status":
            patched = dict(obj)
            patched["status"] = merge_patch(obj.get("status") or {}, body.get("status") or {})
        else:
            patched = merge_patch(obj, {k: v for k, v in body.items() if k != "status"})
            if patched.get("spec") != obj.get("spec"):
                patched["metadata"]["generation"] = int(obj["metadata"].get("generation") or 1) + 1
        patched["metadata"] = {**patched["metadata"], "resourceVersion": str(next(self._versions))}
        self.objects[base] = patched
        self._done(Call("patch", path, copy.deepcopy(body)))
        return copy.deepcopy(patched)

    async def delete(self, path: str, body: JSON | None = None) -> JSON:
        self._asked(Call("delete", path, body))
        obj = self._get(path)
        uid = ((body or {}).get("preconditions") or {}).get("uid")
        if uid is not None and uid != obj["metadata"].get("uid"):
            raise ApiError(409, "Conflict", f"{path}: precondition failed: uid {uid}")
        del self.objects[path]
        self._done(Call("delete", path, body))
        return copy.deepcopy(obj)


def _fields_match(selector: str, obj: JSON) -> bool:
    for term in selector.split(","):
        key, _, value = term.partition("=")
        node: Any = obj
        for part in key.strip().split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if str(node) != value.strip():
            return False
    return True
