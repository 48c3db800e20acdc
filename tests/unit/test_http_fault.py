"""http-fault: the agent's commands (pure), and the proxy itself against an HTTP server on 127.0.0.1.

The proxy runs in-process with its upstream given (on loopback nothing is redirected, so there is no
SO_ORIGINAL_DST); tests/e2e/test_http_fault_netns.py runs it behind the real nftables redirect.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from coordinator.api.http_fault import HttpFaultOptions
from coordinator.api.models import Fault
from coordinator.faults import DRIVERS
from coordinator.faults.ephemeral import InPodFault, http_fault
from coordinator.faults.inpod import HttpFault, agent_script, build_commands
from coordinator.faults.inpod.http import apply_commands, proxy_port, proxy_spec, ready_file
from coordinator.faults.inpod.programs import http_fault as proxy

ABORT = {"abort": {"statusCode": 503}}

# --- the agent's commands ----------------------------------------------------------------------------------------


def test_the_redirect_goes_to_the_proxy_in_the_faults_own_table() -> None:
    port = proxy_port("abc", 8080)
    assert apply_commands(HttpFault(8080, ABORT), "abc", "coordinator_abc") == [
        ["nft", "add", "table", "inet", "coordinator_abc"],
        [
            "nft",
            "add",
            "chain",
            "inet",
            "coordinator_abc",
            "prerouting",
            "{",
            "type",
            "nat",
            "hook",
            "prerouting",
            "priority",
            "-100",
            ";",
            "policy",
            "accept",
            ";",
            "}",
        ],
        [
            "nft",
            "add",
            "rule",
            "inet",
            "coordinator_abc",
            "prerouting",
            "iifname",
            "!=",
            '"lo"',
            "tcp",
            "dport",
            "8080",
            "counter",
            "redirect",
            "to",
            f":{port}",
        ],
    ]
    commands = build_commands(HttpFault(8080, ABORT), "abc", 30)
    assert commands.revert == [["nft", "delete", "table", "inet", "coordinator_abc"]]
    assert commands.ready_file == ready_file("abc") == "/tmp/coordinator-abc.ready"
    assert commands.hold is not None
    assert commands.hold[:2] == ["python3", "/opt/coordinator-agent/http_fault.py"]
    assert json.loads(commands.hold[2]) == {
        "port": 8080,
        "proxyPort": port,
        "durationSeconds": 30,
        "percent": 100,
        **ABORT,
    }
    assert commands.hold[3] == ready_file("abc")


def test_the_proxy_port_is_stable_high_and_never_the_faulted_one() -> None:
    assert proxy_port("abc", 1) == proxy_port("abc", 1)
    ports = {proxy_port(f"id{i}", 1) for i in range(200)}
    assert all(20000 <= p < 30000 for p in ports)
    assert len(ports) > 150
    taken = proxy_port("abc", 1)
    assert proxy_port("abc", taken) == taken + 1


def test_the_script_says_holding_only_after_the_proxy_is_ready_and_the_redirect_is_in_place() -> None:
    script = agent_script(HttpFault(8080, ABORT), 30, fault_id="abc")
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
    order = [
        script.index("trap 'finish 143' TERM"),
        script.index("python3 /opt/coordinator-agent/http_fault.py"),
        script.index("while [ ! -e /tmp/coordinator-abc.ready ]"),
        script.index("out=$(nft add table inet coordinator_abc"),
        script.index("out=$(nft add rule inet coordinator_abc"),
        script.index("say 'holding: python3"),
        script.index('wait "$hold_pid"; rc=$?\nhold_pid=\nif'),
    ]
    assert order == sorted(order)
    assert "kernel lacks nft_redir" in script
    assert "kernel lacks nft_chain_nat" in script
    assert "was not ready within 20s" in script


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (lambda: HttpFault(443, ABORT), "port 443 is a TLS port"),
        (lambda: HttpFault(8080, {**ABORT, "delay": {"delayMs": 5}}), "exactly one of"),
        (lambda: HttpFault(8080, {"abort": {}}), "exactly one of statusCode and reset"),
        (lambda: HttpFault(8080, {"abort": {"statusCode": 503, "reset": True}}), "exactly one of statusCode"),
        (lambda: HttpFault(8080, ABORT, percent=101), "percent"),
        (lambda: HttpFault(8080, ABORT, path_regex="(unclosed"), "pathRegex"),
        (lambda: HttpFault(8080, ABORT, headers={"x-user": "[a-"}), "headers.x-user"),
        (lambda: HttpFault(8080, {"replace": {"headers": {"Content-Length": "1"}}}), "set by the proxy itself"),
        (lambda: HttpFault(8080, {"corrupt": {"bytes": 1, "ratio": 0.5}}), "bytes or ratio"),
        (lambda: HttpFault(8080, {"delay": {"delayMs": 0}}), "between 1ms and 10m"),
    ],
)
def test_bad_options_are_refused_by_name(fault: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fault()


def _options(**body: Any) -> HttpFaultOptions:
    return HttpFaultOptions.model_validate({"port": 8080, **body})


@pytest.mark.parametrize(
    ("body", "spec"),
    [
        ({"abort": {"statusCode": 503}}, {"abort": {"statusCode": 503, "reset": False}}),
        ({"abort": {"reset": True}}, {"abort": {"reset": True}}),
        ({"delay": {"duration": "1.5s"}}, {"delay": {"delayMs": 1500}}),
        ({"replace": {"statusCode": 500, "body": "x"}}, {"replace": {"statusCode": 500, "body": "x"}}),
        ({"patch": {"jsonMergePatch": {"a": None}}}, {"patch": {"jsonMergePatch": {"a": None}}}),
        ({"corrupt": {"ratio": 0.5}}, {"corrupt": {"mode": "flip", "ratio": 0.5}}),
    ],
)
def test_each_action_maps_onto_a_spec_the_proxy_reads(body: dict[str, Any], spec: dict[str, Any]) -> None:
    fault = http_fault(_options(method="GET", path="/api", headers={"x-user": "test-.*"}, percent=25, **body), {})
    assert isinstance(fault, HttpFault)
    written = proxy_spec(fault, "abc", 30)
    assert {key: written[key] for key in spec} == spec
    parsed = proxy.Fault.from_spec(json.loads(json.dumps(written)))  # the proxy's own reading of it
    assert parsed.port == 8080
    assert parsed.percent == 25
    assert parsed.method == b"GET"
    assert parsed.path_prefix == "/api"
    assert [name for name, _ in parsed.headers] == [b"x-user"]


def test_the_driver_runs_the_agent_with_net_admin_only() -> None:
    driver = DRIVERS["http-fault"]
    assert isinstance(driver, InPodFault)
    fault = Fault.model_validate({"type": "http-fault", "httpFault": {"port": 8080, "abort": {"reset": True}}})
    container = driver.container(fault, {"metadata": {"name": "p"}, "spec": {}}, "0.0/x/Pod/ns/p", 30, "tools:1")
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert "http_fault.py" in container["command"][2]


# --- the proxy's pure parts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [  # RFC 7386, appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_json_merge_patch_follows_rfc_7386(target: Any, patch: Any, result: Any) -> None:
    assert proxy.merge_patch(target, patch) == result


@pytest.mark.parametrize("mode", ["flip", "replace"])
def test_corruption_changes_exactly_the_asked_bytes_and_keeps_the_length(mode: str) -> None:
    body = bytes(range(256)) * 4
    rng = random.Random(7)
    for corrupt, changed in ((proxy.Corrupt(mode, 3, None), 3), (proxy.Corrupt(mode, None, 0.25), 256)):
        out = proxy.corrupt_body(body, corrupt, rng)
        assert len(out) == len(body)
        diffs = [i for i in range(len(body)) if out[i] != body[i]]
        assert len(diffs) == changed
        if mode == "flip":
            assert all(out[i] == body[i] ^ 0xFF for i in diffs)
    assert proxy.corrupt_body(b"", proxy.Corrupt(mode, 5, None), rng) == b""
    assert proxy.corrupt_body(b"ab", proxy.Corrupt(mode, 5, None), rng) != b"ab"


def test_the_match_is_method_path_and_every_header_in_full() -> None:
    fault = proxy.Fault.from_spec(
        {
            "port": 1,
            "proxyPort": 2,
            "durationSeconds": 1,
            "method": "get",
            "path": "/api",
            "headers": {"X-User": "test-[0-9]+"},
            **ABORT,
        }
    )
    headers = [(b"x-user", b"test-12")]
    assert fault.matches(b"GET", b"/api/items?x=1", headers)
    assert not fault.matches(b"POST", b"/api/items", headers)
    assert not fault.matches(b"GET", b"/other", headers)
    assert not fault.matches(b"GET", b"/api", [(b"x-user", b"test-12x")])
    assert not fault.matches(b"GET", b"/api", [])
    regex = proxy.Fault.from_spec({"port": 1, "proxyPort": 2, "durationSeconds": 1, "pathRegex": "/v[0-9]/.*", **ABORT})
    assert regex.matches(b"PUT", b"/v1/x?q", [])
    assert not regex.matches(b"PUT", b"/api/v1/x", [])


def test_tls_is_told_from_http() -> None:
    assert proxy.looks_like_tls(b"\x16\x03\x01\x02\x00\x01")
    assert not proxy.looks_like_tls(b"GET / HTTP/1.1\r\n")


# --- the proxy on loopback ---------------------------------------------------------------------------------------


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536  # one write per response (flushed per request): no Nagle wait between head and body

    def do_GET(self) -> None:
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        body = json.dumps({"path": self.path, "user": {"name": "ann", "id": 7}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Upstream", "yes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, int]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ("127.0.0.1", server.server_address[1])
    server.shutdown()
    server.server_close()


@dataclass
class Running:
    proxy: proxy.Proxy
    port: int


async def _proxy(upstream: tuple[str, int], **spec: Any) -> AsyncIterator[Running]:
    fault = proxy.Fault.from_spec({"port": upstream[1], "proxyPort": 0, "durationSeconds": 60, **spec})
    running = proxy.Proxy(fault, random.Random(1), upstream=upstream)
    server = await asyncio.start_server(running.handle, "127.0.0.1", 0)
    try:
        yield Running(running, server.sockets[0].getsockname()[1])
    finally:
        server.close()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def _get(port: int, paths: list[str], method: str = "GET", body: bytes | None = None) -> list[Answer]:
    """Requests on ONE keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    answers = []
    try:
        for path in paths:
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            answers.append(Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()))
    finally:
        conn.close()
    return answers


async def test_unmatched_requests_pass_through_on_one_keep_alive_connection(upstream: tuple[str, int]) -> None:
    async for run in _proxy(upstream, path="/faulted", **ABORT):
        answers = await asyncio.to_thread(_get, run.port, ["/a", "/chunked", "/b"])
        assert [a.status for a in answers] == [200, 200, 200]
        assert json.loads(answers[0].body)["path"] == "/a"
        assert answers[1].body == b"hello chunked world"
        assert answers[2].headers["x-upstream"] == "yes"
        assert (run.proxy.requests, run.proxy.matched, run.proxy.faulted) == (3, 0, 0)
        posted = await asyncio.to_thread(_get, run.port, ["/p"], "POST", b"x" * 100_000)
        assert (posted[0].status, posted[0].body) == (201, b"x" * 100_000)


class ImpatientUpstream(Upstream):
    timeout = 0.2  # closes a keep-alive connection idle this long, as servers' idle timeouts do


async def test_an_upstream_connection_the_application_closed_is_replaced() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ImpatientUpstream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        async for run in _proxy(("127.0.0.1", server.server_address[1]), path="/faulted", **ABORT):
            conn = http.client.HTTPConnection("127.0.0.1", run.port, timeout=10)

            def get(conn: http.client.HTTPConnection = conn) -> int:
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                return resp.status

            assert await asyncio.to_thread(get) == 200
            await asyncio.sleep(0.6)  # the upstream connection behind this client connection is closed by now
            assert await asyncio.to_thread(get) == 200
            conn.close()
    finally:
        server.shutdown()
        server.server_close()


async def test_abort_answers_the_status_to_about_percent_of_matching_requests(upstream: tuple[str, int]) -> None:
    async for run in _proxy(upstream, percent=50, **ABORT):
        answers = await asyncio.to_thread(_get, run.port, ["/"] * 200)
        aborted = sum(a.status == 503 for a in answers)
        assert 70 <= aborted <= 130
        assert {a.status for a in answers} == {200, 503}
        assert run.proxy.faulted == aborted


async def test_abort_reset_resets_the_connection(upstream: tuple[str, int]) -> None:
    async for run in _proxy(upstream, abort={"reset": True}):
        with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
            await asyncio.to_thread(_get, run.port, ["/"])


async def test_delay_holds_each_matching_request(upstream: tuple[str, int]) -> None:
    async for run in _proxy(upstream, delay={"delayMs": 300}, method="GET"):
        loop = asyncio.get_running_loop()
        started = loop.time()
        answers = await asyncio.to_thread(_get, run.port, ["/", "/"])
        assert loop.time() - started >= 0.6
        assert [a.status for a in answers] == [200, 200]


async def test_replace_sets_status_headers_and_body(upstream: tuple[str, int]) -> None:
    spec = {"replace": {"statusCode": 500, "headers": {"X-Upstream": "no", "X-New": "1"}, "body": "oops"}}
    async for run in _proxy(upstream, **spec):
        (answer, after) = await asyncio.to_thread(_get, run.port, ["/", "/chunked"])
        assert (answer.status, answer.body) == (500, b"oops")
        assert (answer.headers["x-upstream"], answer.headers["x-new"], answer.headers["content-length"]) == (
            "no",
            "1",
            "4",
        )
        assert (after.status, after.body) == (500, b"oops")


async def test_patch_merges_into_a_json_body_and_leaves_other_bodies(upstream: tuple[str, int]) -> None:
    spec = {"patch": {"headers": {"X-Patched": "1"}, "jsonMergePatch": {"user": {"id": None, "role": "admin"}}}}
    async for run in _proxy(upstream, **spec):
        (answer, chunked) = await asyncio.to_thread(_get, run.port, ["/x", "/chunked"])
        assert json.loads(answer.body) == {"path": "/x", "user": {"name": "ann", "role": "admin"}}
        assert answer.headers["x-patched"] == "1"
        assert int(answer.headers["content-length"]) == len(answer.body)
        assert (chunked.body, chunked.headers["x-patched"]) == (b"hello chunked world", "1")


async def test_corrupt_flips_bytes_of_about_percent_of_the_bodies(upstream: tuple[str, int]) -> None:
    async for run in _proxy(upstream, percent=30, corrupt={"mode": "flip", "bytes": 2}):
        answers = await asyncio.to_thread(_get, run.port, ["/same"] * 150)
        expected = json.dumps({"path": "/same", "user": {"name": "ann", "id": 7}}).encode()
        corrupted = [a.body for a in answers if a.body != expected]
        assert 20 <= len(corrupted) <= 70
        for body in corrupted:
            assert len(body) == len(expected)
            assert sum(x != y for x, y in zip(body, expected, strict=True)) == 2
        assert all(a.status == 200 for a in answers)


async def test_a_tls_handshake_stops_the_proxy_with_status_2(upstream: tuple[str, int]) -> None:
    async for run in _proxy(upstream, **ABORT):
        reader, writer = await asyncio.open_connection("127.0.0.1", run.port)
        writer.write(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")
        await writer.drain()
        with pytest.raises(ConnectionResetError):
            await reader.read()
        writer.close()
        await asyncio.wait_for(run.proxy.stopped.wait(), 5)
        assert run.proxy.exit_status == proxy.EXIT_NOT_HELD


async def test_the_proxy_ends_by_itself_at_its_duration(tmp_path: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fault = proxy.Fault.from_spec({"port": 1, "proxyPort": port, "durationSeconds": 0.5, **ABORT})
    ready = tmp_path / "ready"
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await proxy.serve(fault, str(ready)) == 0
    assert 0.5 <= loop.time() - started < 3
    assert ready.read_text() == f"{port}\n"
