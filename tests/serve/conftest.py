"""The real ``edge-affect serve`` process on a free loopback port, and a plain HTTP client for it (stdlib only).

Clips: the shipped ``astronaut_clip.mp4`` (always there, so CI without ../shared still streams) and, where
present, the real clips of ``../shared/data/video`` (tests that need them skip with the reason).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "edge_affect" / "assets" / "samples"
SHIPPED_CLIP = SAMPLES / "astronaut_clip.mp4"  # 30 frames, 320×240, the astronaut's face in every frame
VIDEO_DIR = Path(os.environ.get("EDGE_AFFECT_VIDEO_DIR", ROOT.parent / "shared" / "data" / "video"))
TOKEN = "test-token-0123456789abcdef"

#: Waiting for ``serve`` to answer /healthz: a hang guard (model load on a busy machine), not a speed claim.
START_WAIT_S = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One ``edge-affect serve`` subprocess; ``request`` speaks HTTP/1.1 to it."""

    def __init__(self, args: list[str], token: str | None, log: Path) -> None:
        self.port = free_port()
        self.token = token
        self.log = log
        cmd = [sys.executable, "-m", "edge_affect.cli", "serve", "--port", str(self.port), *args]
        if token:
            cmd += ["--token", token]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("EDGE_AFFECT_TOKEN", None)
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + START_WAIT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"serve did not answer /healthz within {START_WAIT_S:.0f} s: {log.read_text()[-2000:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def headers(self, auth: bool = True, **extra: str) -> dict[str, str]:
        h = dict(extra)
        if auth and self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    def request(
        self, method: str, path: str, body: Any = None, *, auth: bool = True, headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """``(status, headers, body)``; ``body`` a dict is sent as JSON."""
        h = self.headers(auth, **(headers or {}))
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        status, _, data = self.request(method, path, body, **kw)
        return status, json.loads(data)

    def events(self, sid: str, query: str = "?from=0", timeout: float = 60.0) -> tuple[list[dict], dict | None]:
        """All frame events of a stream (SSE) until its ``end`` event: ``(events, end)``."""
        conn = self.connection(timeout)
        try:
            conn.request("GET", f"/v1/streams/{sid}/events{query}", headers=self.headers())
            r = conn.getresponse()
            assert r.status == 200, r.read()
            assert r.getheader("Content-Type", "").startswith("text/event-stream")
            return read_sse(r)
        finally:
            conn.close()

    @staticmethod
    def read_sse(r: Any, limit: int | None = None) -> tuple[list[dict], dict | None]:
        """:func:`read_sse` (for test modules, which cannot import this conftest)."""
        return read_sse(r, limit)

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self, timeout: float = 120.0) -> int:
        """Ctrl-C (SIGINT), as a user stops it; the exit code (killed, -9, only after ``timeout``: a hang guard)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def read_sse(r: Any, limit: int | None = None) -> tuple[list[dict], dict | None]:
    """Frame events (``data:`` JSON) until ``event: end`` (returned second) or ``limit`` events."""
    events: list[dict] = []
    name, data = "message", []
    while True:
        line = r.readline()
        if not line:
            return events, None
        line = line.decode().rstrip("\r\n")
        if line == "":
            if data:
                payload = json.loads("\n".join(data))
                if name == "end":
                    return events, payload
                events.append(payload)
                if limit is not None and len(events) >= limit:
                    return events, None
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def make_clip(path: Path, frames: int, size: tuple[int, int] = (320, 240), fps: float = 25.0) -> Path:
    """A clip panning back and forth over the shipped astronaut photo (a face in every frame), made here."""
    import cv2

    w, h = size
    side = max(w, h) * 5 // 4
    photo = cv2.resize(cv2.imread(str(SAMPLES / "astronaut.png")), (side, side), interpolation=cv2.INTER_AREA)
    span = min(side - w, side - h)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(frames):
        k = i % (2 * span) if i % (2 * span) < span else 2 * span - i % (2 * span)
        out.write(np.ascontiguousarray(photo[k : k + h, k : k + w]))
    out.release()
    return path


@pytest.fixture(scope="session")
def clip_maker() -> object:
    return make_clip


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder served with --allow-files: the shipped clip, a text file, a corrupt video and a link out."""
    d = tmp_path_factory.mktemp("media")
    shutil.copy(SHIPPED_CLIP, d / "astronaut_clip.mp4")
    (d / "notes.txt").write_text("not a video\n")
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    (d / "escape.mp4").symlink_to(ROOT / "README.md")
    make_clip(d / "long.mp4", frames=240, size=(160, 120))
    if VIDEO_DIR.is_dir():
        (d / "real").symlink_to(VIDEO_DIR.resolve())  # a link to a folder outside: refused (resolved)
        for clip in VIDEO_DIR.glob("*.mp4"):
            shutil.copy(clip, d / clip.name)
    return d


@pytest.fixture(scope="module")
def server(media: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``edge-affect serve`` with the default model, a token and --allow-files; stopped with Ctrl-C after."""
    srv = Server(["--allow-files", str(media)], TOKEN, tmp_path_factory.mktemp("log") / "serve.log")
    yield srv
    code = srv.stop()
    assert code == 0, srv.log.read_text()[-3000:]


@pytest.fixture(scope="session")
def serve_factory() -> type[Server]:
    """The :class:`Server` class, for tests that start their own server."""
    return Server


@pytest.fixture(scope="session")
def video_dir() -> Path:
    """Folder of the real clips; tests that need one skip where it is missing."""
    return VIDEO_DIR
