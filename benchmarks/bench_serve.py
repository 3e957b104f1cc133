"""``edge-affect serve`` under load: requests/s and latency of ``POST /v1/predict`` at 1, 8 and 32 concurrent
clients, with dynamic batching and without (``--no-batching``), against the real server process on loopback.

    python benchmarks/bench_serve.py --json benchmarks/results/serve.json

Each client keeps one HTTP/1.1 connection and sends ``--requests`` photos one after another (default: the
shipped astronaut photo as JPEG, one face). Per row: requests/s over the whole round, p50/p99 latency, errors,
and the batches the server formed in that round (mean requests per model call, from ``/metrics``). The server
runs with its defaults (``--workers 4``, ``--batch-wait-ms 2``) unless told otherwise. The machine's load
average is recorded: on a shared machine the rows are only comparable within one run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "edge_affect" / "assets" / "samples" / "astronaut.png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """``edge-affect serve`` on a free loopback port; Ctrl-C on exit."""

    def __init__(self, extra: list[str]) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "edge_affect.cli", "serve", "--port", str(self.port), *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited: {self.proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("serve did not answer /healthz within 60 s")

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def batches(self) -> dict[str, float]:
        """Batches run so far: count and requests summed (from the ``/metrics`` histogram; 0 without batching)."""
        out = {"count": 0.0, "sum": 0.0}
        for line in self.get("/metrics")[1].decode().splitlines():
            for k in out:
                if line.startswith(f"edge_affect_predict_batch_requests_{k} "):
                    out[k] = float(line.split()[1])
        return out

    def close(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def load(port: int, body: bytes, clients: int, requests: int) -> tuple[list[float], int, float]:
    """``clients`` threads × ``requests`` POSTs: (latencies in s, errors, wall seconds)."""
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine: list[float] = []
        bad = 0
        start.wait()
        try:
            for _ in range(requests):
                t0 = time.perf_counter()
                conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": "image/jpeg"})
                r = conn.getresponse()
                r.read()
                mine.append(time.perf_counter() - t0)
                bad += r.status != 200
        except (OSError, http.client.HTTPException):
            bad += requests - len(mine)
        finally:
            conn.close()
            with lock:
                lat.extend(mine)
                errors[0] += bad

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return lat, errors[0], time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="1,8,32", help="concurrent clients per round, comma-separated (default 1,8,32)")
    ap.add_argument("--requests", type=int, default=20, help="requests per client per round (default 20)")
    ap.add_argument("--image", default=str(ASTRONAUT), help="photo to send (default: the shipped astronaut, as JPEG)")
    ap.add_argument("--serve-args", default="", help="more options for edge-affect serve, e.g. '--workers 4'")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the results here (atomically)")
    args = ap.parse_args(argv)
    import cv2

    from edge_affect.artifact import atomic_write_text

    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    img = cv2.imread(args.image)
    if img is None:
        raise SystemExit(f"bench_serve: error: --image {args.image}: not a readable image")
    body = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    rows = []
    load_before = os.getloadavg()
    for mode, extra in (("batching", []), ("no batching", ["--no-batching"])):
        srv = Serve(extra + args.serve_args.split())
        try:
            load(srv.port, body, 4, 3)  # warm-up
            for n in clients:
                b0 = srv.batches()
                lat, errors, wall = load(srv.port, body, n, args.requests)
                b1 = srv.batches()
                batches = b1["count"] - b0["count"]
                p50, p99 = (float(v) for v in np.percentile(np.asarray(lat) * 1000, [50, 99]))
                rows.append(
                    {
                        "mode": mode,
                        "clients": n,
                        "requests": len(lat),
                        "errors": errors,
                        "requests_per_s": len(lat) / wall,
                        "p50_ms": p50,
                        "p99_ms": p99,
                        "batches": int(batches),
                        "mean_requests_per_batch": (b1["sum"] - b0["sum"]) / batches if batches else None,
                    }
                )
                print(f"  {mode}, {n} clients: {rows[-1]['requests_per_s']:.1f} req/s", file=sys.stderr)
        finally:
            srv.close()
    head = f"{'mode':<12} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'req/batch':>9}"
    print(head)
    for r in rows:
        rb = f"{r['mean_requests_per_batch']:.2f}" if r["mean_requests_per_batch"] else "–"
        print(
            f"{r['mode']:<12} {r['clients']:>7} {r['requests_per_s']:>8.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
            f"{r['errors']:>6} {rb:>9}"
        )
    if args.json:
        result = {
            "benchmark": "serve /v1/predict",
            "image": {"path": os.path.relpath(args.image, ROOT), "width": img.shape[1], "height": img.shape[0],
                      "jpeg_bytes": len(body)},
            "requests_per_client": args.requests,
            "serve_args": args.serve_args,
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "python": platform.python_version(),
                        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]}},
            "rows": rows,
        }
        atomic_write_text(args.json, json.dumps(result, indent=2))
        print(f"results in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
