"""GETs shared by the callers that ask for the same object at about the same time, each still answered by a read
the API server made after it asked.

100 TestRuns of one scenario created at once (a GitOps sync) each GET the scenario and their namespace before
they start: 200 requests for two objects. A watch cache would answer them with none, but with what the cache
last saw, which may predate the runs (a sync that edits a scenario and creates its runs could start them from
the old spec), and whether the namespace is protected must be read as it is now. Here a read is shared only by
callers that asked *before it was sent*:

- nothing of the path in flight: the caller sends a GET now;
- a GET of the path in flight: it was sent before the caller asked, so its answer may be older than the caller
  needs. The caller waits for the next GET of the path, sent as soon as that one ends, and every caller that
  asks meanwhile shares it.

So every answer is one the API server read from etcd (a GET without a resourceVersion is a quorum read) after
the caller asked, as its own GET would be, and a path has at most one GET in flight and one waiting. A burst
costs a few GETs per object instead of one per caller (benchmarks/README.md, finding 25). An error is every
sharing caller's error, as it would have been for each of them alone. Each caller gets its own copy of the
object, so one caller's changes to it reach no other. A caller that is cancelled stops waiting; the GET goes on
for the others.

Share only reads whose answer does not depend on who asks: the client is the operator's own, and a run's rights
are checked by access reviews, not by the client it reads with.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass

import orjson

from coordinator.adapters.kube import JSON, KubeApi


@dataclass(slots=True)
class _Path:
    """One path's GET in flight, and the GET that waits for it to end."""

    loop: asyncio.AbstractEventLoop
    sent: asyncio.Future[bytes]
    waiting: asyncio.Future[bytes] | None = None


class SharedReads:
    """The shared GETs of one client (:func:`shared_get`)."""

    def __init__(self, client: KubeApi) -> None:
        self._client = client
        self._paths: dict[str, _Path] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0  # GETs sent, for tests and the benchmarks

    async def get(self, path: str) -> JSON:
        loop = asyncio.get_running_loop()
        entry = self._paths.get(path)
        if entry is None or entry.loop is not loop:  # an entry left by a loop that has closed is dropped
            answer: asyncio.Future[bytes] = loop.create_future()
            self._paths[path] = _Path(loop, answer)
            self._send(path, answer)
        else:
            if entry.waiting is None:
                entry.waiting = loop.create_future()
            answer = entry.waiting
        # shield: a cancelled caller must not cancel the answer the others wait for
        return orjson.loads(await asyncio.shield(answer))  # type: ignore[no-any-return]

    def _send(self, path: str, answer: asyncio.Future[bytes]) -> None:
        self.sent += 1
        task = answer.get_loop().create_task(self._fetch(path, answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, path: str, answer: asyncio.Future[bytes]) -> None:
        """GET ``path`` and settle ``answer`` with it, as JSON bytes (each caller decodes its own copy)."""
        try:
            obj = await self._client.get(path)
        except Exception as exc:  # every caller sharing the GET gets its error
            answer.set_exception(exc)
            answer.exception()  # marked retrieved: a GET whose callers all left logs no warning
        except BaseException:
            answer.cancel()
            raise
        else:
            answer.set_result(orjson.dumps(obj))
        finally:
            self._ended(path, answer)

    def _ended(self, path: str, answer: asyncio.Future[bytes]) -> None:
        """The GET answering ``answer`` is over: send the one waiting for it, or forget the path."""
        entry = self._paths.get(path)
        if entry is None or entry.sent is not answer:
            return
        if entry.waiting is None:
            del self._paths[path]
            return
        entry.sent, entry.waiting = entry.waiting, None
        self._send(path, entry.sent)


_READERS: weakref.WeakKeyDictionary[KubeApi, SharedReads] = weakref.WeakKeyDictionary()


def shared_reads(client: KubeApi) -> SharedReads:
    """The shared GETs of ``client`` (one per client, for as long as it lives)."""
    reads = _READERS.get(client)
    if reads is None:
        reads = _READERS[client] = SharedReads(client)
    return reads


async def shared_get(client: KubeApi, path: str) -> JSON:
    """GET ``path`` with ``client``, sharing the request with callers that asked for it before it was sent.

    Raises what the client's GET raises (ApiError; 404 when the object does not exist).
    """
    return await shared_reads(client).get(path)
