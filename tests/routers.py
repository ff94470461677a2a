"""Live routing helpers: tiny HTTP backends that name themselves, a request loop, the routers' hashes,
binomial intervals, and HAProxy / nginx processes started on 127.0.0.1 for one test.

Everything here is bounded: every server binds 127.0.0.1 on a free port, every loop has a
request budget and a deadline, and every process is stopped by the test that started it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable, Sequence

# --------------------------------------------------------------------------- plans with a router target


def with_target(plan, target: str):
    """``plan`` compiled for ``target`` too, when both variants list servers (the routers need them); else ``None``."""
    if not (plan.stable.servers and plan.canary.servers):
        return None
    if target in plan.targets:
        return plan
    return dataclasses.replace(plan, targets=plan.targets + (target,))


# --------------------------------------------------------------------------- the routers' hashes

_M32 = 0xFFFFFFFF
_P1, _P2, _P3, _P4, _P5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def xxh32(data: bytes, seed: int = 0) -> int:
    """XXH32, the hash of HAProxy's ``xxh32`` converter (seed 0 by default)."""
    n = len(data)
    i = 0
    if n >= 16:
        v = [(seed + _P1 + _P2) & _M32, (seed + _P2) & _M32, seed & _M32, (seed - _P1) & _M32]
        while i + 16 <= n:
            for j in range(4):
                lane = int.from_bytes(data[i + 4 * j:i + 4 * j + 4], "little")
                v[j] = (_rotl((v[j] + lane * _P2) & _M32, 13) * _P1) & _M32
            i += 16
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M32
    else:
        h = (seed + _P5) & _M32
    h = (h + n) & _M32
    while i + 4 <= n:
        h = (_rotl((h + int.from_bytes(data[i:i + 4], "little") * _P3) & _M32, 17) * _P4) & _M32
        i += 4
    while i < n:
        h = (_rotl((h + data[i] * _P5) & _M32, 11) * _P1) & _M32
        i += 1
    h ^= h >> 15
    h = (h * _P2) & _M32
    h ^= h >> 13
    h = (h * _P3) & _M32
    h ^= h >> 16
    return h


def murmur2(data: bytes) -> int:
    """MurmurHash2 as nginx computes it for ``split_clients`` (seed 0)."""
    m = 0x5BD1E995
    n = len(data)
    h = n & _M32
    i = 0
    while n - i >= 4:
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & _M32
        k ^= k >> 24
        k = (k * m) & _M32
        h = ((h * m) & _M32) ^ k
        i += 4
    rest = n - i
    if rest == 3:
        h ^= data[i + 2] << 16
    if rest >= 2:
        h ^= data[i + 1] << 8
    if rest >= 1:
        h ^= data[i]
        h = (h * m) & _M32
    h ^= h >> 13
    h = (h * m) & _M32
    h ^= h >> 15
    return h


# --------------------------------------------------------------------------- binomial intervals

Z_999 = 3.2905267314919255  # two-sided 99.9% normal quantile


def acceptance_interval(share: float, n: int, confidence: float = 0.999) -> tuple[int, int]:
    """The counts ``[lo, hi]`` a Binomial(n, share) lands in with probability >= ``confidence``.

    Exact: each tail outside the interval holds at most ``(1 - confidence) / 2`` of the probability.
    A measured count outside it means the router does not realise ``share`` (or a 1-in-1000 event).
    """
    tail = (1 - confidence) / 2
    log_p, log_q = math.log(share), math.log1p(-share)
    base = math.lgamma(n + 1)
    pmf = [math.exp(base - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q)
           for k in range(n + 1)]
    lo, below = 0, 0.0
    while below + pmf[lo] <= tail:
        below += pmf[lo]
        lo += 1
    hi, above = n, 0.0
    while above + pmf[hi] <= tail:
        above += pmf[hi]
        hi -= 1
    return lo, hi


def sample_size(share: float, relative: float, z: float = Z_999) -> int:
    """Trials so that the 99.9% acceptance region of ``share`` is about ``share * (1 +/- relative)``.

    From the normal approximation: z * sqrt(share * (1 - share) / n) = relative * share.
    """
    return math.ceil(z * z * (1 - share) / (share * relative * relative))


# --------------------------------------------------------------------------- backends


@dataclass
class Backend:
    """An HTTP/1.1 server on 127.0.0.1 that answers every request with its own name.

    ``/health`` answers ``health_status``; every other path answers ``status`` and is counted:
    ``mirrored`` when it is a shadow copy (``X-Rollout-Mirror``), ``requests`` otherwise.
    """

    name: str
    status: int = 200
    health_status: int = 200
    port: int = 0
    requests: int = 0
    mirrored: int = 0

    def reset(self) -> None:
        self.requests = 0
        self.mirrored = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(length)
                if path.startswith("/health"):
                    status = self.health_status
                else:
                    status = self.status
                    if headers.get("x-rollout-mirror"):
                        self.mirrored += 1
                    else:
                        self.requests += 1
                body = self.name.encode()
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nContent-Type: text/plain\r\nX-Served-By: %s\r\n\r\n%s"
                    % (status, len(body), body, body)
                )
                if headers.get("connection", "").lower() == "close":
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


class Backends:
    """Several backends served by one event loop in a background thread."""

    def __init__(self, *backends: Backend):
        self.backends = {b.name: b for b in backends}
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.base_events.Server] = []
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> Backends:
        self._thread.start()
        for backend in self.backends.values():
            server = asyncio.run_coroutine_threadsafe(
                asyncio.start_server(backend._serve, "127.0.0.1", backend.port), self._loop
            ).result(10)
            backend.port = server.sockets[0].getsockname()[1]
            self._servers.append(server)
        return self

    def __exit__(self, *exc) -> None:
        for server in self._servers:
            server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __getitem__(self, name: str) -> Backend:
        return self.backends[name]

    def reset(self) -> None:
        for backend in self.backends.values():
            backend.reset()


# --------------------------------------------------------------------------- the client


@dataclass
class Response:
    status: int
    served_by: str


class Client:
    """Keep-alive HTTP/1.1 client that pipelines batches of GET requests on one connection."""

    def __init__(self, port: int, host: str = "localhost", timeout: float = 10.0):
        self.port = port
        self.host = host
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._buffer = b""

    def _connect(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._sock

    def _request(self, path: str, headers: dict[str, str]) -> bytes:
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}"] + [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _read_response(self, deadline: float) -> tuple[Response, bool]:
        """The next response on the connection, and whether the server closes the connection after it."""
        sock = self._connect()
        while b"\r\n\r\n" not in self._buffer:
            self._recv(sock, deadline)
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            self._recv(sock, deadline)
            rest = self._buffer.partition(b"\r\n\r\n")[2]
        body, self._buffer = rest[:length], rest[length:]
        closing = headers.get("connection", "").lower() == "close"
        served_by = headers.get("x-served-by", body.decode("latin-1") if status == 200 else "")
        return Response(status, served_by), closing

    def _recv(self, sock: socket.socket, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError("no complete response before the deadline")
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response was complete")
        self._buffer += chunk

    def _send(self, data: bytes, deadline: float) -> None:
        """Send on the kept-alive connection; when the server has closed it while idle, on a new one.

        The first response is read ahead into the buffer, so a connection the server closed
        before answering anything is detected here and nothing is sent twice.
        """
        for attempt in range(2):
            try:
                sock = self._connect()
                sock.sendall(data)
                if not self._buffer:
                    self._recv(sock, deadline)
                return
            except (ConnectionError, OSError):
                self.close()
                if attempt:
                    raise

    def get_many(self, requests: Sequence[dict[str, str]], path: str = "/", batch: int = 64,
                 budget: float = 60.0) -> list[Response]:
        """One GET per header set, pipelined ``batch`` at a time; bounded by ``budget`` seconds overall.

        When the server closes the connection after a response (``Connection: close``), the requests
        it did not answer are sent again on a new connection, so each request is answered once.
        """
        deadline = time.monotonic() + budget
        out: list[Response] = []
        pending = list(requests)
        reconnects = 0
        while pending:
            chunk, pending = pending[:batch], pending[batch:]
            self._send(b"".join(self._request(path, h) for h in chunk), deadline)
            for i in range(len(chunk)):
                response, closing = self._read_response(deadline)
                out.append(response)
                if closing:
                    self.close()
                    pending = list(chunk[i + 1:]) + pending
                    reconnects += 1
                    if reconnects > 1000:
                        raise ConnectionError("the server keeps closing connections")
                    break
        return out

    def get(self, headers: dict[str, str] | None = None, path: str = "/") -> Response:
        return self.get_many([headers or {}], path)[0]


def wait_until(predicate, budget: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + budget
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {budget:.0f}s waiting for {what}")
        time.sleep(step)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- router processes


class Router:
    """A router process started for one test; stopped (by its pid) when the block ends."""

    def __init__(self, argv: Sequence[str], ports: Iterable[int], log: Path, cwd: Path | None = None):
        self.argv = list(argv)
        self.ports = list(ports)
        self.log = log
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Router:
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self._out, stderr=subprocess.STDOUT, cwd=self.cwd,
                                     start_new_session=True)
        try:
            wait_until(lambda: self.proc.poll() is not None or all(port_open(p) for p in self.ports), 10,
                       f"{self.argv[0]} to listen on {self.ports}")
        except AssertionError:
            self.__exit__()
            raise
        if self.proc.poll() is not None:
            self.__exit__()
            raise AssertionError(f"{self.argv[0]} exited: {self.log.read_text(errors='replace')[-2000:]}")
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(10)
        self._out.close()


def admin_command(socket_path: Path, command: str, timeout: float = 5.0) -> str:
    """One HAProxy Runtime API command over the admin socket; returns the answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def run_check(argv: Sequence[str]) -> subprocess.CompletedProcess:
    """Run a router's configuration check; bounded by a timeout."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


def nginx_main_config(prefix: Path, include: Path, workers: int = 1) -> str:
    """A minimal main configuration around an http-level include, with every path inside ``prefix``."""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"worker_processes {workers};\n"
        "daemon off;\n"
        f"pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        "    access_log off;\n"
        "    keepalive_requests 100000;\n"
        f"{temp}\n"
        f"    include {include};\n"
        "}\n"
    )


def write_nginx(prefix: Path, include_text: str) -> Path:
    """Write ``include_text`` and its main configuration under ``prefix``; returns the main file."""
    prefix.mkdir(parents=True, exist_ok=True)
    include = prefix / "rollout.conf"
    include.write_text(include_text)
    main = prefix / "main.conf"
    main.write_text(nginx_main_config(prefix, include))
    return main
