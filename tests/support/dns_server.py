"""A tiny authoritative DNS server for the dns-fault tests: fixed A records, NXDOMAIN for every other name.

Standalone (the standard library and dnslib), so the real tier runs this very file in a pod of the tools image
(``python3 -c "$(cat dns_server.py)" --port 53 --record web.test=10.1.2.3``), and the unit tests and the network
namespace prototype run it in-process or as a subprocess. It serves UDP and TCP on ``--listen`` (0.0.0.0).
"""

from __future__ import annotations

import argparse
import socket
import socketserver
import struct
import sys
import threading
from collections.abc import Mapping, Sequence


def answer(data: bytes, records: Mapping[str, str]) -> bytes:
    from dnslib import QTYPE, RCODE, RR, A, DNSRecord

    request = DNSRecord.parse(data)
    reply = request.reply()
    name = str(request.q.qname).lower().rstrip(".")
    if name not in records:
        reply.header.rcode = RCODE.NXDOMAIN
    elif request.q.qtype == QTYPE.A:
        reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(records[name]), ttl=1))
    return bytes(reply.pack())


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


class _Udp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        server: Server = self.server.owner  # type: ignore[attr-defined]
        server.queries.append(("udp", data))
        sock.sendto(answer(data, server.records), self.client_address)


class _Tcp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Server = self.server.owner  # type: ignore[attr-defined]
        try:
            while True:
                (size,) = struct.unpack("!H", _read_exact(self.request, 2))
                data = _read_exact(self.request, size)
                server.queries.append(("tcp", data))
                reply = answer(data, server.records)
                self.request.sendall(struct.pack("!H", len(reply)) + reply)
        except (OSError, ConnectionError):
            return


class Server:
    """UDP and TCP on ``host``:``port`` (0: any free port, the same for both), in background threads."""

    def __init__(self, records: Mapping[str, str], host: str = "127.0.0.1", port: int = 0) -> None:
        self.records = {k.lower().rstrip("."): v for k, v in records.items()}
        self.queries: list[tuple[str, bytes]] = []
        for attempt in range(20):  # port 0: a free UDP port is not always free for TCP too; draw again
            self.udp = socketserver.ThreadingUDPServer((host, port), _Udp)
            self.port = self.udp.server_address[1]
            self.tcp = socketserver.ThreadingTCPServer((host, self.port), _Tcp, bind_and_activate=False)
            self.tcp.allow_reuse_address = True
            try:
                self.tcp.server_bind()
                self.tcp.server_activate()
                break
            except OSError:
                self.udp.server_close()
                self.tcp.server_close()
                if port or attempt == 19:
                    raise
        for server in (self.udp, self.tcp):
            server.owner = self  # type: ignore[attr-defined]
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def close(self) -> None:
        for server in (self.udp, self.tcp):
            server.shutdown()
            server.server_close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="0.0.0.0")  # noqa: S104 - a test pod's own server
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--record", action="append", default=[], help="name=IPv4 address")
    args = parser.parse_args(argv)
    records = dict(r.split("=", 1) for r in args.record)
    Server(records, args.listen, args.port)
    print(f"dns server on {args.listen}:{args.port}: {records}", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
