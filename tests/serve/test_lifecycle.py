"""``edge-affect serve`` as a process: exposure rules at start, ``--source`` at launch, loopback Host check,
and Ctrl-C with a stream running and a client connected (streams end, clients get the end, exit 0)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="edge-affect serve needs the serve extra (starlette, uvicorn)")
pytest.importorskip("uvicorn", reason="edge-affect serve needs the serve extra (starlette, uvicorn)")

from edge_affect.serve.cli import check_exposure, is_loopback  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "host,token,words",
    [
        ("0.0.0.0", None, "needs --token"),
        ("192.168.1.20", None, "needs --token"),
        ("::", None, "needs --token"),
        ("127.0.0.1", "short", "at least 16"),
    ],
)
def test_exposure_rules(host: str, token: str | None, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        check_exposure(host, token)


def test_loopback_names() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.org"))
    check_exposure("0.0.0.0", "x" * 16)  # a long enough token: allowed
    check_exposure("127.0.0.1", None)


def test_cli_refuses_a_public_host_without_token() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edge_affect.cli", "serve", "--host", "0.0.0.0", "--port", "9"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={"PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("edge-affect: error: --host 0.0.0.0: serving beyond this machine needs --token")
    assert "Traceback" not in r.stderr


def test_source_at_launch_then_ctrl_c(serve_factory: Any, clip_maker: Any, tmp_path: Path) -> None:
    clip = clip_maker(tmp_path / "long.mp4", frames=1500, size=(160, 120))  # a minute at 25 fps
    srv = serve_factory(["--source", str(clip)], None, tmp_path / "serve.log")
    try:
        status, body = srv.json("GET", "/v1/streams")
        assert status == 200 and len(body["streams"]) == 1
        (s,) = body["streams"]
        assert s["source"] == str(clip) and s["state"] == "running"
        # no token: loopback names only (a page on another origin cannot reach it through DNS rebinding)
        assert srv.request("GET", "/healthz", headers={"Host": "attacker.example"})[0] == 403
        assert srv.request("GET", "/healthz", headers={"Host": f"localhost:{srv.port}"})[0] == 200
        conn = srv.connection()
        conn.request("GET", f"/v1/streams/{s['id']}/events")
        r = conn.getresponse()
        first, _ = srv.read_sse(r, limit=2)
        assert len(first) == 2
        t0 = time.monotonic()
        code = srv.stop()
        seconds = time.monotonic() - t0
        rest, end = srv.read_sse(r)
        conn.close()
    finally:
        srv.stop()
    log = srv.log.read_text()
    assert code == 0, log[-3000:]
    print(f"\nCtrl-C to exit: {seconds:.1f} s")  # not a bound: a busy machine decides; the stream state below does
    assert end is not None and end["state"] == "stopped", (end, log[-2000:])
    assert 2 + len(rest) < 1500  # stopped before the clip's end
    assert "server stopped" in log and "Traceback" not in log
