#!/usr/bin/env python3
"""The router under two hostile loads of issue 11, for one `tractor` binary.

1. Peak RSS of `tractor route` relaying one big answer (default 400 MB) from
   a backend, read by a client at full speed: a router that collects the
   answer before relaying it grows by the answer's size.
2. 60 slow senders against `--max-inflight 50`: each sends a request head and
   then one byte of its body per second (reconnecting when cut), while one
   valid caller sends a small request every 50 ms. Prints how many of the
   valid caller's requests got 503, and over how many seconds.

Usage: benches/route_hostile.py TRACTOR_BINARY [--seconds 30] [--big-mb 400]
Run it once with the binary before a change and once after; the figures
are only comparable within one machine and one run of both.
The backend is a small Python server, so that only the router is measured.
"""

import argparse
import http.client
import http.server
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request

CHUNK = 1 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Backend(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    big_bytes = 0

    def do_GET(self):
        n = self.big_bytes if self.path == "/big" else 2
        self.send_response(200)
        self.send_header("content-length", str(n))
        self.end_headers()
        if n == 2:
            self.wfile.write(b"{}")
            return
        block = b"x" * CHUNK
        sent = 0
        while sent < n:
            part = block[: min(CHUNK, n - sent)]
            self.wfile.write(part)
            sent += len(part)

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        body = b'{"model_name":"m","outputs":[]}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def start_backend(big_bytes):
    Backend.big_bytes = big_bytes
    server = ThreadingServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def supports(tractor, flag):
    out = subprocess.run([tractor, "route", "--help"], capture_output=True, text=True).stdout
    return flag in out


def start_router(tractor, backend_port, extra):
    port, admin = free_port(), free_port()
    proc = subprocess.Popen(
        [tractor, "route", "--listen", f"127.0.0.1:{port}", "--admin-listen",
         f"127.0.0.1:{admin}", "--backend", f"1=http://127.0.0.1:{backend_port}@100", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=1)
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("the router never answered")


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def big_answer(tractor, big_mb):
    big = big_mb * 1_000_000
    backend = start_backend(big)
    extra = ["--max-response-bytes", str(2 * big)] if supports(tractor, "--max-response-bytes") else []
    proc, port = start_router(tractor, backend, extra)
    try:
        before = status_kib(proc.pid, "VmHWM")
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("GET", "/big")
        response = conn.getresponse()
        received = 0
        while True:
            part = response.read(CHUNK)
            if not part:
                break
            received += len(part)
        elapsed = time.monotonic() - started
        peak = status_kib(proc.pid, "VmHWM")
        print(f"| {big_mb} MB answer | status {response.status}, {received / 1e6:.0f} MB in "
              f"{elapsed:.1f} s | peak RSS {before / 1024:.0f} MiB idle -> {peak / 1024:.0f} MiB |")
    finally:
        proc.kill()
        proc.wait()


def slow_sender(port, stop, opened):
    head = (b"POST /v2/models/m/infer HTTP/1.1\r\nHost: r\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(head)
                opened.append(1)
                while not stop.is_set():
                    s.sendall(b" ")
                    stop.wait(1.0)
        except OSError:
            stop.wait(0.1)


def slow_senders(tractor, seconds, senders=60, inflight=50):
    backend = start_backend(0)
    proc, port = start_router(tractor, backend, ["--max-inflight", str(inflight)])
    stop = threading.Event()
    opened = []
    threads = [threading.Thread(target=slow_sender, args=(port, stop, opened), daemon=True)
               for _ in range(senders)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        outcomes = {}
        refused_at = []
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("POST", "/v2/models/m/infer", body=b'{"inputs":[]}',
                             headers={"content-type": "application/json"})
                code = conn.getresponse().status
                conn.close()
            except OSError as e:
                code = type(e).__name__
            outcomes[code] = outcomes.get(code, 0) + 1
            if code == 503:
                refused_at.append(time.monotonic() - started)
            time.sleep(0.05)
        span = f"{refused_at[0]:.1f}-{refused_at[-1]:.1f} s" if refused_at else "none"
        total = sum(outcomes.values())
        print(f"| {senders} slow senders, --max-inflight {inflight}, {seconds} s | valid caller: "
              f"{total} requests, {outcomes.get(503, 0)} got 503 (503s over {span}); "
              f"all outcomes {dict(sorted(outcomes.items(), key=str))}; "
              f"slow connections opened {len(opened)} |")
    finally:
        stop.set()
        proc.kill()
        proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tractor")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--big-mb", type=int, default=400)
    args = parser.parse_args()
    print(f"| `{args.tractor}` | | |")
    print("|---|---|---|")
    big_answer(args.tractor, args.big_mb)
    slow_senders(args.tractor, args.seconds)


if __name__ == "__main__":
    main()
