"""http-fault's transparent HTTP/1.1 proxy, run inside the agent container (``python3 http_fault.py SPEC``).

Standalone: the standard library and h11 (Debian's python3-h11) only; it is copied into the tools image
(``/opt/coordinator-agent/http_fault.py``) and must not import the operator.

The agent script (faults/inpod/agent.py) starts it first; once it listens it creates the ready file, and only
then does the script add the nftables rule that redirects the pod's inbound TCP traffic on ``port`` to
``proxyPort``. Each redirected connection is forwarded to its *original* destination (``SO_ORIGINAL_DST``), so an
application bound to the pod's IP is reached; the proxy's own connection is local output, which the prerouting
redirect never sees. ``percent`` of the requests that match get the fault's one action:

* ``abort``: answer ``statusCode`` without asking the application, or reset the connection (``reset``);
* ``delay``: wait ``delayMs`` before forwarding;
* ``replace``: forward, then replace the response's status, headers and/or body with the given ones;
* ``patch``: forward, then add or override headers and JSON merge-patch (RFC 7386) a JSON body;
* ``corrupt``: forward, then flip (XOR 0xFF) or replace ``bytes`` bytes (or ``ratio`` of them) of the body.

It ends by itself after ``durationSeconds`` (its own dead man's switch), or on SIGTERM/SIGINT, with status 0. A
TLS handshake on the port ends it with status 2 and a termination message: the proxy cannot read TLS, and
passing it through would make a fault that does nothing look applied. Plain HTTP/1.1 only (keep-alive,
Content-Length and chunked bodies); a response body over ``MAX_BODY`` is relayed unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h11

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same number at SOL_IPV6
MAX_BODY = 16 * 1024 * 1024
READ_SIZE = 65536
TERMINATION_LOG = "/dev/termination-log"
EXIT_NOT_HELD = 2
# Framing and hop-by-hop headers the proxy computes itself; a replace/patch cannot set them.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})

Headers = list[tuple[bytes, bytes]]


def say(message: str) -> None:
    print(f"coordinator-agent: http-fault: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Abort:
    status: int | None
    reset: bool


@dataclass(frozen=True)
class Delay:
    seconds: float


@dataclass(frozen=True)
class Replace:
    status: int | None
    headers: Headers
    body: bytes | None


@dataclass(frozen=True)
class Patch:
    headers: Headers
    merge_patch: dict[str, Any] | None


@dataclass(frozen=True)
class Corrupt:
    mode: str  # flip | replace
    count: int | None
    ratio: float | None


Action = Abort | Delay | Replace | Patch | Corrupt


def _headers(raw: dict[str, str] | None) -> Headers:
    out = [(name.lower().encode("ascii"), value.encode("latin-1")) for name, value in (raw or {}).items()]
    if bad := [name.decode() for name, _ in out if name.decode() in FRAMING_HEADERS]:
        raise ValueError(f"headers: {', '.join(bad)} is set by the proxy itself")
    return out


def parse_action(spec: dict[str, Any]) -> Action:
    """The one action of ``spec`` (ValueError when there is not exactly one)."""
    given = [key for key in ("abort", "delay", "replace", "patch", "corrupt") if spec.get(key) is not None]
    if len(given) != 1:
        raise ValueError(f"exactly one of abort, delay, replace, patch, corrupt is needed, got {given or 'none'}")
    key, value = given[0], spec[given[0]]
    if key == "abort":
        status, reset = value.get("statusCode"), bool(value.get("reset", False))
        if (status is None) == (not reset):
            raise ValueError("abort needs exactly one of statusCode and reset: true")
        return Abort(status, reset)
    if key == "delay":
        return Delay(int(value["delayMs"]) / 1000)
    if key == "replace":
        body = value.get("body")
        return Replace(value.get("statusCode"), _headers(value.get("headers")), None if body is None else body.encode())
    if key == "patch":
        merge = value.get("jsonMergePatch")
        if merge is not None and not isinstance(merge, dict):
            raise ValueError("patch.jsonMergePatch must be a JSON object")
        return Patch(_headers(value.get("headers")), merge)
    mode = value.get("mode", "flip")
    if mode not in ("flip", "replace"):
        raise ValueError(f'corrupt.mode must be flip or replace, got "{mode}"')
    count, ratio = value.get("bytes"), value.get("ratio")
    if count is not None and ratio is not None:
        raise ValueError("corrupt takes bytes or ratio, not both")
    return Corrupt(mode, None if count is None and ratio is not None else int(count or 1), ratio)


@dataclass(frozen=True)
class Fault:
    """What is faulted (the match and ``percent``) and how (the action). Built from the agent's JSON spec."""

    port: int
    proxy_port: int
    duration_seconds: float
    percent: float
    action: Action
    method: bytes | None = None
    path_prefix: str | None = None
    path_regex: re.Pattern[str] | None = None
    headers: tuple[tuple[bytes, re.Pattern[str]], ...] = ()

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Fault:
        regex = spec.get("pathRegex")
        method = spec.get("method")
        return cls(
            port=int(spec["port"]),
            proxy_port=int(spec["proxyPort"]),
            duration_seconds=float(spec["durationSeconds"]),
            percent=float(spec.get("percent", 100)),
            action=parse_action(spec),
            method=method.upper().encode("ascii") if method else None,
            path_prefix=spec.get("path"),
            path_regex=re.compile(regex) if regex else None,
            headers=tuple(
                (name.lower().encode("ascii"), re.compile(value)) for name, value in (spec.get("headers") or {}).items()
            ),
        )

    def matches(self, method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """Whether a request is one this fault is about (before ``percent``): method, path (without the query;
        the prefix, or the regex matching the whole path), and every header's value matching its regex in full
        (a repeated header's values joined with ", ")."""
        if self.method is not None and method.upper() != self.method:
            return False
        path = target.split(b"?", 1)[0].decode("latin-1")
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        if self.path_regex is not None and not self.path_regex.fullmatch(path):
            return False
        for name, pattern in self.headers:
            values = [v.decode("latin-1") for n, v in headers if n.lower() == name]
            if not values or not pattern.fullmatch(", ".join(values)):
                return False
        return True

    def chooses(self, rng: random.Random) -> bool:
        return self.percent >= 100 or rng.random() * 100 < self.percent


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null removes a member, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def corrupt_body(body: bytes, corrupt: Corrupt, rng: random.Random) -> bytes:
    """``body`` with ``corrupt.count`` bytes (or ``ratio`` of them, at least one) changed at random positions:
    flipped (every bit) or replaced by a different random byte. Same length; an empty body stays empty."""
    if not body:
        return body
    count = corrupt.count if corrupt.count is not None else max(1, round(len(body) * (corrupt.ratio or 0)))
    out = bytearray(body)
    for position in rng.sample(range(len(body)), min(count, len(body))):
        if corrupt.mode == "flip":
            out[position] ^= 0xFF
        else:
            out[position] = (out[position] + rng.randint(1, 255)) % 256
    return bytes(out)


def set_headers(headers: Sequence[tuple[bytes, bytes]], overrides: Headers) -> Headers:
    """``headers`` with each of ``overrides`` replacing every header of that name (or added)."""
    names = {name for name, _ in overrides}
    return [(n, v) for n, v in headers if n.lower() not in names] + list(overrides)


def reframed(headers: Sequence[tuple[bytes, bytes]], body: bytes) -> Headers:
    """Headers for a body the proxy rewrote: its own Content-Length, no Transfer-Encoding."""
    kept = [(n, v) for n, v in headers if n.lower() not in (b"content-length", b"transfer-encoding")]
    return [*kept, (b"content-length", str(len(body)).encode())]


def rewrite(
    action: Action, status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes, rng: random.Random
) -> tuple[int, Headers, bytes]:
    """The response the client gets instead of (``status``, ``headers``, ``body``) for a body-rewriting action."""
    if isinstance(action, Replace):
        new_body = body if action.body is None else action.body
        return action.status or status, reframed(set_headers(headers, action.headers), new_body), new_body
    if isinstance(action, Patch):
        new_body = body
        if action.merge_patch is not None:
            try:
                document = json.loads(body)
            except ValueError:
                document = None  # not JSON (or compressed): the headers are patched, the body is left alone
            else:
                new_body = json.dumps(merge_patch(document, action.merge_patch), separators=(",", ":")).encode()
        return status, reframed(set_headers(headers, action.headers), new_body), new_body
    if isinstance(action, Corrupt):
        new_body = corrupt_body(body, action, rng)
        return status, reframed(headers, new_body), new_body
    return status, list(headers), body


def looks_like_tls(first: bytes) -> bool:
    """A TLS record of type handshake (0x16) with a 3.x version: a ClientHello."""
    return len(first) >= 2 and first[0] == 0x16 and first[1] == 0x03


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """Where the redirected connection was going (conntrack's record of the address before the redirect)."""
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        port = struct.unpack_from("!H", raw, 2)[0]
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), port


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST rather than a FIN: what a client sees as "connection reset by peer"."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Reset(Exception):
    """Reset the client's connection."""


class ProtocolBreak(Exception):
    """The exchange cannot go on (a peer closed or broke HTTP/1.1); the client connection is closed."""


def _no_delay(writer: asyncio.StreamWriter) -> None:
    """Send each write at once: a response's head and body are separate writes, which Nagle's algorithm would
    hold for the peer's delayed ACK (40 ms a response)."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Endpoint:
    """One side of the proxy: a stream and its h11 connection."""

    def __init__(
        self, role: type[h11.CLIENT] | type[h11.SERVER], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.conn = h11.Connection(role, max_incomplete_event_size=64 * 1024)
        _no_delay(writer)
        self.reader = reader
        self.writer = writer

    async def next_event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.reader.read(READ_SIZE))
                continue
            return event

    async def send(self, *events: Any) -> None:
        for event in events:
            data = self.conn.send(event)
            if data:
                self.writer.write(data)
        await self.writer.drain()

    def reusable(self) -> bool:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            return True
        return False

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


class Proxy:
    """Serves the redirected connections. ``upstream`` replaces the original destination (tests on loopback,
    where nothing is redirected)."""

    def __init__(self, fault: Fault, rng: random.Random | None = None, upstream: tuple[str, int] | None = None) -> None:
        self.fault = fault
        self.rng = rng or random.Random()  # noqa: S311 - fault sampling, not cryptography
        self.upstream = upstream
        self.stopped = asyncio.Event()
        self.exit_status = 0
        self.requests = self.matched = self.faulted = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            destination = self.upstream or original_destination(writer.get_extra_info("socket"))
        except OSError:
            writer.close()  # reached the proxy's own port directly, not through the redirect
            return
        upstream: Endpoint | None = None
        try:
            first = await reader.read(READ_SIZE)
            if looks_like_tls(first):
                self.refuse_tls(peer)
                _reset(writer)
                return
            client = Endpoint(h11.SERVER, reader, writer)
            client.conn.receive_data(first)
            while True:
                event = await client.next_event()
                if not isinstance(event, h11.Request):
                    break
                upstream = await self.exchange(client, event, upstream, destination)
                if not client.reusable():
                    break
        except (ProtocolBreak, ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        except _Reset:
            _reset(writer)
            return
        finally:
            if isinstance(upstream, Endpoint):
                upstream.close()
        if not writer.is_closing():
            writer.close()

    def refuse_tls(self, peer: Any) -> None:
        reason = (
            f"http-fault stopped: a TLS handshake arrived on port {self.fault.port} (from {peer[0] if peer else '?'}); "
            "http-fault handles plain HTTP/1.1 only, so the fault was removed"
        )
        say(reason)
        if os.path.exists(TERMINATION_LOG):  # the kubelet's file; never created elsewhere (a host's /dev)
            with contextlib.suppress(OSError), open(TERMINATION_LOG, "w") as log:
                log.write(reason + "\n")
        self.exit_status = EXIT_NOT_HELD
        self.stopped.set()

    async def exchange(
        self, client: Endpoint, request: h11.Request, upstream: Endpoint | None, destination: tuple[str, int]
    ) -> Endpoint | None:
        """One request and its response; returns the upstream connection to reuse (None: none open). Raises
        _Reset when the client's connection is to be reset."""
        self.requests += 1
        action: Action | None = None
        if self.fault.matches(request.method, request.target, list(request.headers)):
            self.matched += 1
            if self.fault.chooses(self.rng):
                self.faulted += 1
                action = self.fault.action
        if client.conn.client_is_waiting_for_100_continue:
            await client.send(h11.InformationalResponse(status_code=100, headers=[]))
        if isinstance(action, Abort):
            await self._drain_request(client)
            if action.reset:
                raise _Reset
            body = f"http-fault: aborted with {action.status}\n".encode()
            head = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
            await client.send(h11.Response(status_code=action.status or 503, headers=head), h11.Data(data=body))
            await client.send(h11.EndOfMessage())
            return upstream
        if isinstance(action, Delay):
            await asyncio.sleep(action.seconds)
        if upstream is not None and upstream.reader.at_eof():
            # The application closed the idle keep-alive connection (its idle timeout): a new one, or the client
            # would see a closed connection the application never caused it.
            upstream.close()
            upstream = None
        if upstream is None:
            try:
                reader, writer = await asyncio.open_connection(*destination)
            except OSError:
                raise _Reset from None  # as the client would have seen the application's closed port
            upstream = Endpoint(h11.CLIENT, reader, writer)
        await upstream.send(h11.Request(method=request.method, target=request.target, headers=list(request.headers)))
        while True:
            event = await client.next_event()
            if isinstance(event, h11.Data):
                await upstream.send(event)
            elif isinstance(event, h11.EndOfMessage):
                await upstream.send(event)
                break
            else:
                raise ProtocolBreak
        await self._relay_response(client, upstream, request, action)
        if upstream.reusable():
            return upstream
        upstream.close()
        return None

    async def _drain_request(self, client: Endpoint) -> None:
        while not isinstance(await client.next_event(), h11.EndOfMessage):
            pass

    async def _relay_response(
        self, client: Endpoint, upstream: Endpoint, request: h11.Request, action: Action | None
    ) -> None:
        while True:
            response = await upstream.next_event()
            if isinstance(response, h11.InformationalResponse):
                if response.status_code != 101:  # an Upgrade would leave HTTP/1.1: not supported
                    await client.send(response)
                continue
            if not isinstance(response, h11.Response):
                raise ProtocolBreak
            break
        rewrites = isinstance(action, Replace | Patch | Corrupt) and request.method != b"HEAD"
        if not rewrites:
            await client.send(
                h11.Response(status_code=response.status_code, headers=list(response.headers), reason=response.reason)
            )
            await self._stream_body(client, upstream)
            return
        body = bytearray()
        while True:
            event = await upstream.next_event()
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:  # too big to hold: relay it as it is
                    say(f"a response body over {MAX_BODY} bytes is relayed unchanged")
                    self.faulted -= 1
                    await client.send(
                        h11.Response(
                            status_code=response.status_code, headers=list(response.headers), reason=response.reason
                        ),
                        h11.Data(data=bytes(body)),
                    )
                    await self._stream_body(client, upstream)
                    return
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise ProtocolBreak
        assert action is not None
        status, headers, new_body = rewrite(action, response.status_code, list(response.headers), bytes(body), self.rng)
        if status in (204, 304) or 100 <= status < 200:
            headers, new_body = [(n, v) for n, v in headers if n != b"content-length"], b""
        events: list[Any] = [h11.Response(status_code=status, headers=headers)]
        if new_body:
            events.append(h11.Data(data=new_body))
        await client.send(*events, h11.EndOfMessage())

    async def _stream_body(self, client: Endpoint, upstream: Endpoint) -> None:
        while True:
            event = await upstream.next_event()
            if isinstance(event, h11.Data | h11.EndOfMessage):
                await client.send(event)
                if isinstance(event, h11.EndOfMessage):
                    return
            else:
                raise ProtocolBreak


def _write_ready(path: str, port: int) -> None:
    with open(path + ".tmp", "w") as ready:
        ready.write(f"{port}\n")
    os.replace(path + ".tmp", path)


async def serve(fault: Fault, ready_file: str | None, rng: random.Random | None = None) -> int:
    """Listen on ``fault.proxy_port``, create ``ready_file``, serve until the duration ends or a stop signal."""
    proxy = Proxy(fault, rng)
    servers = [await asyncio.start_server(proxy.handle, "0.0.0.0", fault.proxy_port, reuse_address=True)]  # noqa: S104 - the redirect delivers to the pod's address
    if socket.has_ipv6:
        with contextlib.suppress(OSError):  # no IPv6 in this pod
            servers.append(await asyncio.start_server(proxy.handle, "::", fault.proxy_port, reuse_address=True))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, proxy.stopped.set)
    if ready_file:
        _write_ready(ready_file, fault.proxy_port)
    say(f"listening on port {fault.proxy_port} for port {fault.port} for {fault.duration_seconds:g}s")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proxy.stopped.wait(), fault.duration_seconds)
    for server in servers:
        server.close()
    say(f"stopped: {proxy.requests} requests, {proxy.matched} matched, {proxy.faulted} faulted")
    return proxy.exit_status


def main(argv: Sequence[str]) -> int:
    if len(argv) not in (2, 3):
        say("usage: http_fault.py SPEC_JSON [READY_FILE]")
        return EXIT_NOT_HELD
    try:
        fault = Fault.from_spec(json.loads(argv[1]))
    except (ValueError, KeyError, TypeError, re.error) as exc:
        say(f"bad spec: {exc}")
        return EXIT_NOT_HELD
    try:
        return asyncio.run(serve(fault, argv[2] if len(argv) == 3 else None))
    except OSError as exc:
        reason = f"http-fault not held: the proxy cannot listen on port {fault.proxy_port}: {exc.strerror or exc}"
        say(reason)
        return EXIT_NOT_HELD


if __name__ == "__main__":
    sys.exit(main(sys.argv))
