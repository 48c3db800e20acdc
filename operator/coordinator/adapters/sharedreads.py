"""Reads shared by the callers that ask the same thing at about the same time, each still answered by a read
the API server made after it asked.

100 TestRuns of one scenario created at once (a GitOps sync) each have the scenario read and the requester's
rights reviewed twice (by the admission webhook, then by the run before it changes anything), and their
namespace read once: about 700 requests for two objects and a few reviews. A watch cache or a cache of review
answers would save them, but would answer with what was true when it last looked, which may predate the runs (a
sync that edits a scenario and creates its runs could start them from the old spec; a revoked right would still
be granted), and whether the namespace is protected must be read as it is now. Here a read is shared only by
callers that asked *before it was sent*:

- nothing of the same read in flight: the caller sends it now;
- the same read in flight: it was sent before the caller asked, so its answer may be older than the caller
  needs. The caller waits for the next one, sent as soon as that one ends, and every caller that asks
  meanwhile shares it.

So every answer is one the API server made after the caller asked, as its own request's would be (a GET
without a resourceVersion is a quorum read from etcd; a SubjectAccessReview is answered by the authorizers when
it arrives), and a read has at most one request in flight and one waiting. A burst costs a few requests per
object and review instead of one per caller (benchmarks/README.md, finding 25). An error is every sharing
caller's error, as it would have been for each of them alone. Each caller gets its own copy of the answer, so
one caller's changes to it reach no other. A caller that is cancelled stops waiting; the request goes on for
the others.

Share only reads whose answer does not depend on who sends them: one client's, keyed by what is asked (a review
names its subject in its body).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

import orjson

from coordinator.adapters.kube import JSON, ApiError, KubeApi


@dataclass(slots=True)
class _Read:
    """One read's request in flight, and the request that waits for it to end."""

    loop: asyncio.AbstractEventLoop
    send: Callable[[], Awaitable[JSON]]
    sent: asyncio.Future[bytes]
    waiting: asyncio.Future[bytes] | None = None


class SharedReads:
    """The shared reads of one client (:func:`shared_get`, :func:`shared_review`)."""

    def __init__(self, client: KubeApi) -> None:
        self._client = client
        self._reads: dict[Hashable, _Read] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0  # requests sent (the tests count them)

    async def get(self, path: str) -> JSON:
        """GET ``path``."""
        return await self.read(("GET", path), lambda: self._client.get(path))

    async def create(self, path: str, body: JSON) -> JSON:
        """POST ``body`` to ``path``: only for a create that reads and stores nothing (a SubjectAccessReview), whose
        answer depends on the body alone."""
        key = ("POST", path, orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
        return await self.read(key, lambda: self._client.create(path, body))

    async def read(self, key: Hashable, send: Callable[[], Awaitable[JSON]]) -> JSON:
        """The answer of ``send()``, shared with the callers of the same ``key`` that ask before it is sent."""
        loop = asyncio.get_running_loop()
        entry = self._reads.get(key)
        if entry is None or entry.loop is not loop:  # an entry left by a loop that has closed is dropped
            entry = self._reads[key] = _Read(loop, send, loop.create_future())
            answer = entry.sent
            self._send(key, entry)
        else:
            if entry.waiting is None:
                entry.waiting = loop.create_future()
            answer = entry.waiting
        # shield: a cancelled caller must not cancel the answer the others wait for
        return orjson.loads(await asyncio.shield(answer))  # type: ignore[no-any-return]

    def _send(self, key: Hashable, entry: _Read) -> None:
        """Send ``entry``'s request now, to settle ``entry.sent``."""
        self.sent += 1
        task = entry.loop.create_task(self._fetch(key, entry.send, entry.sent))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, key: Hashable, send: Callable[[], Awaitable[JSON]], answer: asyncio.Future[bytes]) -> None:
        """Send the request and settle ``answer`` with its JSON bytes (each caller decodes its own copy)."""
        try:
            obj = await send()
        except Exception as exc:  # every caller sharing the request gets its error
            answer.set_exception(exc)
            answer.exception()  # marked retrieved: a request whose callers all left logs no warning
        except BaseException:
            answer.cancel()
            raise
        else:
            answer.set_result(orjson.dumps(obj))
        finally:
            self._ended(key, answer)

    def _ended(self, key: Hashable, answer: asyncio.Future[bytes]) -> None:
        """The request answering ``answer`` is over: send the one waiting for it, or forget the key."""
        entry = self._reads.get(key)
        if entry is None or entry.sent is not answer:
            return
        if entry.waiting is None:
            del self._reads[key]
            return
        entry.sent, entry.waiting = entry.waiting, None
        self._send(key, entry)


_READERS: weakref.WeakKeyDictionary[KubeApi, SharedReads] = weakref.WeakKeyDictionary()


def shared_reads(client: KubeApi) -> SharedReads:
    """The shared reads of ``client`` (one per client, for as long as it lives)."""
    reads = _READERS.get(client)
    if reads is None:
        reads = _READERS[client] = SharedReads(client)
    return reads


async def shared_get(client: KubeApi, path: str) -> JSON:
    """GET ``path`` with ``client``, sharing the request with callers that asked for it before it was sent.

    Raises what the client's GET raises (ApiError; 404 when the object does not exist).
    """
    return await shared_reads(client).get(path)


async def shared_get_or_none(client: KubeApi, path: str) -> JSON | None:
    """:func:`shared_get`, or None when the object does not exist."""
    try:
        return await shared_get(client, path)
    except ApiError as exc:
        if exc.not_found:
            return None
        raise


async def shared_review(client: KubeApi, path: str, body: JSON) -> JSON:
    """Create the review ``body`` at ``path`` (a SubjectAccessReview), sharing the request with callers that ask
    the same review before it is sent: its answer is the authorizer's when it was sent, after they all asked."""
    return await shared_reads(client).create(path, body)
