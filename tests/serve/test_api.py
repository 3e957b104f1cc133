"""``edge-affect serve`` API against the real server process on loopback: health, auth, predict, streams, metrics,
bad input (the server keeps serving), slow and vanishing clients, sources that end or fail."""

from __future__ import annotations

import http.client
import json
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("starlette", reason="edge-affect serve needs the serve extra (starlette, uvicorn)")
pytest.importorskip("uvicorn", reason="edge-affect serve needs the serve extra (starlette, uvicorn)")

ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = ROOT / "edge_affect" / "assets" / "samples" / "astronaut.png"
#: YuNet on astronaut.png (edge_affect/assets/samples/README.md): box x 178.2, y 62.9, w 89.9, h 113.3.
ASTRONAUT_BOX = (178.2, 62.9, 89.9, 113.3)


def png_bomb(width: int, height: int) -> bytes:
    """A valid 8-bit gray PNG of ``width``×``height`` zeros: a few dozen KB that decode to width·height bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = bytes(width + 1)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def alive(server: Any) -> None:
    assert server.request("GET", "/healthz")[0] == 200
    assert server.json("GET", "/v1/streams")[0] == 200


def test_healthz_is_open_and_says_what_runs(server: Any) -> None:
    status, body = server.json("GET", "/healthz", auth=False)
    assert status == 200
    assert body["status"] == "ok" and body["backend"] == "onnxruntime" and body["batching"] is True
    assert body["model"] and body["artifact"].endswith("model.onnx")
    assert body["uptime_s"] > 0 and set(body["streams"]) == {"running", "total"}


@pytest.mark.parametrize(
    "method,path", [("GET", "/"), ("GET", "/metrics"), ("GET", "/v1/streams"), ("POST", "/v1/predict")]
)
def test_no_token_is_401(server: Any, method: str, path: str) -> None:
    status, headers, body = server.request(method, path, b"" if method == "POST" else None, auth=False)
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert "token" in json.loads(body)["error"]
    bad = {"Authorization": "Bearer wrong-token-0123456789"}
    assert server.request(method, path, None, auth=False, headers=bad)[0] == 401


def test_viewer_takes_the_token_once_as_a_cookie(server: Any) -> None:
    status, headers, _ = server.request("GET", f"/?token={server.token}", auth=False)
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    status, _, page = server.request("GET", "/", auth=False, headers={"Cookie": cookie.split(";")[0]})
    assert status == 200 and b"<title>edge-affect" in page and b'aria-live="polite"' in page
    assert server.request("GET", "/?token=wrong-token-0123456789", auth=False)[0] == 401


def test_predict_finds_the_astronaut(server: Any) -> None:
    status, body = server.json("POST", "/v1/predict", ASTRONAUT.read_bytes())
    assert status == 200
    assert body["image"] == {"width": 512, "height": 512}
    (face,) = body["faces"]
    assert face["status"] == "ok"
    # the detector's reference box (tolerance 1 px: same model, same input)
    assert np.allclose(face["box"], ASTRONAUT_BOX, atol=1.0), face["box"]
    assert len(face["landmarks"]) == 5 and face["det_score"] > 0.9
    assert abs(sum(face["expression_probs"].values()) - 1.0) < 1e-4
    assert face["expression"] == max(face["expression_probs"], key=face["expression_probs"].get)
    assert -1.0 <= face["valence"] <= 1.0 and -1.0 <= face["arousal"] <= 1.0
    assert len(face["au_probs"]) == 12 and set(face["au_active"]) == set(face["au_probs"])
    assert {"decode", "detect", "infer"} <= set(body["latency_ms"])


def test_predict_jpeg_matches_png_within_codec_noise(server: Any) -> None:
    import cv2

    bgr = cv2.imread(str(ASTRONAUT))
    ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    png = server.json("POST", "/v1/predict", ASTRONAUT.read_bytes())[1]["faces"][0]
    jpeg = server.json("POST", "/v1/predict", jpg.tobytes())[1]["faces"][0]
    assert np.allclose(jpeg["box"], png["box"], atol=3.0)
    assert abs(jpeg["valence"] - png["valence"]) < 0.1 and jpeg["expression"] == png["expression"]


def test_photo_without_a_face_has_no_faces(server: Any) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", np.full((120, 160, 3), 90, np.uint8))
    status, body = server.json("POST", "/v1/predict", buf.tobytes())
    assert status == 200 and body["faces"] == [] and body["image"] == {"width": 160, "height": 120}


@pytest.mark.parametrize(
    "body,status,words",
    [
        (b"", 400, "empty"),
        (b"this is not an image at all", 400, "not an image"),
        (ASTRONAUT.read_bytes()[:3000], 400, "cannot be decoded"),  # truncated PNG
        (b"\xff\xd8\xff\xe0" + bytes(64), 400, "JPEG"),  # a JPEG signature and nothing else
        (png_bomb(8000, 8000), 413, "megapixels"),  # 64 MP in ~70 KB, refused from its header
    ],
    ids=["empty", "garbage", "truncated-png", "bare-jpeg-header", "png-bomb"],
)
def test_bad_images_are_4xx_json_and_the_server_keeps_serving(
    server: Any, body: bytes, status: int, words: str
) -> None:
    got, headers, data = server.request("POST", "/v1/predict", body)
    assert got == status and headers["content-type"] == "application/json"
    assert words in json.loads(data)["error"]
    alive(server)


def test_declared_big_body_is_413_before_it_is_sent(server: Any) -> None:
    conn = server.connection()
    try:
        conn.putrequest("POST", "/v1/predict")
        conn.putheader("Authorization", f"Bearer {server.token}")
        conn.putheader("Content-Length", str(50 * 10**6))  # over the 20 MB default; nothing follows
        conn.endheaders()
        r = conn.getresponse()
        assert r.status == 413 and "exceeds the limit" in json.loads(r.read())["error"]
    finally:
        conn.close()
    alive(server)


def test_streamed_big_body_is_413(server: Any) -> None:
    """A chunked body (no Content-Length) is counted as it arrives and cut off at the limit."""
    chunk = bytes(1 << 20)
    conn = server.connection()
    try:
        conn.request(
            "POST", "/v1/predict", body=(chunk for _ in range(25)), headers=server.headers(), encode_chunked=True
        )
        r = conn.getresponse()
        assert r.status == 413 and "exceeds the limit" in json.loads(r.read())["error"]
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close before the client has sent everything; it must still be serving
    finally:
        conn.close()
    alive(server)


def test_unknown_endpoints_and_methods_are_json(server: Any) -> None:
    status, body = server.json("GET", "/v2/nothing")
    assert status == 404 and "no such endpoint" in body["error"]
    assert server.json("PUT", "/v1/predict", b"x")[0] == 405
    assert server.json("GET", "/v1/streams/nope/events")[0] == 404


@pytest.mark.parametrize(
    "source,status,words",
    [
        ("", 400, "expected a string"),
        (17, 400, "expected a string"),
        ("ftp://example.org/x.mp4", 400, "unknown scheme"),
        ("http://127.0.0.1:1/x.mp4", 400, "unknown scheme"),
        ("cam:x", 400, "cam:N"),
        ('gst:"filesrc location=/etc/passwd ! fakesink"', 403, "--allow-gst"),
        ("/etc/hostname", 403, "outside --allow-files"),
        ("../../etc/hostname", 403, "outside --allow-files"),
        ("escape.mp4", 403, "outside --allow-files"),  # a link inside pointing out
        ("missing.mp4", 404, "no such file"),
        ("notes.txt", 422, "cannot be opened"),
        ("broken.mp4", 422, "cannot be opened"),
    ],
)
def test_refused_sources(server: Any, source: object, status: int, words: str) -> None:
    got, body = server.json("POST", "/v1/streams", {"source": source})
    assert got == status, body
    assert words in body["error"]
    alive(server)


def test_stream_bodies_must_be_json_objects(server: Any) -> None:
    assert server.json("POST", "/v1/streams", b"{not json", headers={"Content-Type": "application/json"})[0] == 400
    assert server.json("POST", "/v1/streams", {"src": "x"})[0] == 400
    assert server.request("POST", "/v1/streams", b"x" * 100_000)[0] == 413


def _start(server: Any, source: str) -> dict:
    status, body = server.json("POST", "/v1/streams", {"source": source})
    assert status == 201, body
    return body


def test_shipped_clip_streams_one_event_per_frame(server: Any) -> None:
    s = _start(server, "astronaut_clip.mp4")
    events, end = server.events(s["id"])
    assert [e["seq"] for e in events] == list(range(30)) and [e["frame"] for e in events] == list(range(30))
    assert end == {"stream": s["id"], "state": "ended", "reason": "end of video", "frames": 30}
    with_face = [e for e in events if e["faces"]]
    assert len(with_face) >= 28, [e["status"] for e in events]  # the face is in every frame; 2 of 30 may be missed
    f = with_face[0]["faces"][0]
    assert f["status"] == "ok" and len(f["box"]) == 4 and f["track"] is not None
    assert all(e["timestamp"] is not None and "infer" in e["latency_ms"] for e in with_face)
    status, info = server.json("GET", f"/v1/streams/{s['id']}")
    assert status == 200 and info["state"] == "ended" and info["frames"] == 30


def test_real_clip_streams_a_face_in_every_frame(server: Any, video_dir: Path) -> None:
    if not (video_dir / "single_face.mp4").is_file():
        pytest.skip(f"real clip {video_dir / 'single_face.mp4'} not on this machine (../shared/data/video)")
    s = _start(server, "single_face.mp4")
    events, end = server.events(s["id"])
    assert len(events) == 72 and end is not None and end["state"] == "ended"
    assert [e["frame"] for e in events] == list(range(72))
    assert all(len(e["faces"]) == 1 and e["faces"][0]["status"] == "ok" for e in events)


def test_preview_is_mjpeg_of_the_overlay(server: Any) -> None:
    import cv2

    s = _start(server, "astronaut_clip.mp4")
    conn = server.connection()
    try:
        conn.request("GET", f"/v1/streams/{s['id']}/preview.mjpg", headers=server.headers())
        r = conn.getresponse()
        assert r.status == 200 and r.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=frame"
        assert r.readline() == b"--frame\r\n"
        assert r.readline() == b"Content-Type: image/jpeg\r\n"
        length = int(r.readline().decode().split(":")[1])
        assert r.readline() == b"\r\n"
        img = cv2.imdecode(np.frombuffer(r.read(length), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (240, 320, 3)
    finally:
        conn.close()


def test_client_that_disconnects_mid_stream(server: Any, media: Path) -> None:
    """A client reads 3 events and vanishes; the stream runs on to the end and no client is left behind."""
    s = _start(server, "astronaut_clip.mp4")
    conn = server.connection()
    conn.request("GET", f"/v1/streams/{s['id']}/events?from=0", headers=server.headers())
    r = conn.getresponse()
    events, _ = server.read_sse(r, limit=3)
    assert len(events) == 3
    r.close()
    conn.close()
    deadline = time.monotonic() + 120  # a hang guard, not a speed claim
    while time.monotonic() < deadline:
        info = server.json("GET", f"/v1/streams/{s['id']}")[1]
        metrics = server.request("GET", "/metrics")[2].decode()
        if info["state"] == "ended" and f'edge_affect_stream_clients{{stream="{s["id"]}"}} 0' in metrics:
            break
        time.sleep(0.2)
    assert info["state"] == "ended" and info["frames"] == 30
    assert f'edge_affect_stream_clients{{stream="{s["id"]}"}} 0' in metrics


def test_slow_client_never_slows_the_stream(server: Any) -> None:
    """A client that connects with a tiny receive buffer and reads nothing: the pipeline still processes every frame
    of the clip at once. (The kernel's socket buffers, up to 4 MB on loopback, may hold all 240 events, so whether
    its queue overflows here depends on the machine; test_streams.py checks the drop-and-count itself.)"""
    import socket

    s = _start(server, "long.mp4")  # 240 frames
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(
        f"GET /v1/streams/{s['id']}/events?from=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.token}\r\n\r\n".encode()
    )
    try:
        deadline = time.monotonic() + 120  # a hang guard, not a speed claim
        info = server.json("GET", f"/v1/streams/{s['id']}")[1]
        while info["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
            info = server.json("GET", f"/v1/streams/{s['id']}")[1]
        assert info["state"] == "ended" and info["frames"] == 240, info
        assert info["dropped"]["source"] == 0  # a file source never drops
    finally:
        sock.close()


def test_failing_source_ends_its_stream_with_a_reason(server: Any, media: Path) -> None:
    """A video cut off mid-file: the stream ends (or fails) with a reason, one event per frame read."""
    import cv2

    clip = media / "cut.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(40):
        w.write(np.full((120, 160, 3), (i * 6) % 255, np.uint8))
    w.release()
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])
    s = _start(server, "cut.avi")
    events, end = server.events(s["id"])
    assert end is not None and end["state"] in ("ended", "failed") and end["reason"]
    assert 0 < len(events) < 40 or any(e["status"] == "bad_frame" for e in events)
    alive(server)


def test_delete_stops_a_stream(server: Any) -> None:
    s = _start(server, "astronaut_clip.mp4")
    status, body = server.json("DELETE", f"/v1/streams/{s['id']}")
    assert status == 200 and body["id"] == s["id"]
    assert server.json("GET", f"/v1/streams/{s['id']}")[0] == 404
    assert s["id"] not in [x["id"] for x in server.json("GET", "/v1/streams")[1]["streams"]]


def test_metrics_are_prometheus_text(server: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    server.request("GET", "/metrics", auth=False)  # one 401 to count
    assert server.json("POST", "/v1/predict", ASTRONAUT.read_bytes())[0] == 200  # and one prediction
    assert server.json("GET", "/healthz")[0] == 200
    server.events(_start(server, "astronaut_clip.mp4")["id"])  # and one stream run to its end
    status, headers, body = server.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    reqs = {(s.labels["route"], s.labels["status"]): s.value for s in fams["edge_affect_http_requests"].samples}
    assert reqs[("/metrics", "401")] >= 1 and reqs[("/v1/predict", "200")] >= 1 and reqs[("/healthz", "200")] >= 1
    batches = [s for s in fams["edge_affect_predict_batch_requests"].samples if s.name.endswith("_count")]
    assert batches and batches[0].value >= 1
    for name in ("edge_affect_stream_fps", "edge_affect_stream_dropped_frames", "edge_affect_stream_queue_depth",
                 "edge_affect_stream_stage_seconds", "edge_affect_predict_stage_seconds", "edge_affect_uptime_seconds"):
        assert name in fams, name
    stages = {s.labels["stage"] for s in fams["edge_affect_stream_stage_seconds"].samples}
    assert {"detect", "infer", "read"} <= stages


def test_load_32_clients_25_requests(server: Any) -> None:
    """32 concurrent clients × 25 photos each: no errors, batches of more than one request form, RSS stays flat."""
    import cv2

    # 256×256 around the face (a phone's face crop; 4× fewer pixels than the photo keeps the test short)
    crop = np.ascontiguousarray(cv2.imread(str(ASTRONAUT))[0:256, 100:356])
    ok, jpg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
    body = jpg.tobytes()

    def round_of(n_clients: int, n_requests: int) -> tuple[list[float], list[str]]:
        lat: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def client() -> None:
            conn = server.connection(60)
            try:
                for _ in range(n_requests):
                    t0 = time.perf_counter()
                    conn.request("POST", "/v1/predict", body=body, headers=server.headers())
                    r = conn.getresponse()
                    data = r.read()
                    dt = time.perf_counter() - t0
                    with lock:
                        lat.append(dt)
                        if r.status != 200 or len(json.loads(data)["faces"]) != 1:
                            errors.append(f"{r.status} {data[:200]!r}")
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors.append(repr(e))
            finally:
                conn.close()

        threads = [threading.Thread(target=client) for _ in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return lat, errors

    round_of(32, 3)  # warm-up: threads, arenas, ORT buffers at their working sizes
    rss0 = server.rss_kb()
    lat, errors = round_of(32, 25)
    rss1 = server.rss_kb()
    assert not errors, errors[:5]
    assert len(lat) == 800
    p50, p99 = np.percentile(lat, [50, 99]) * 1000
    from prometheus_client.parser import text_string_to_metric_families

    fams = {f.name: f for f in text_string_to_metric_families(server.request("GET", "/metrics")[2].decode())}
    buckets = {s.labels["le"]: s.value for s in fams["edge_affect_predict_batch_requests"].samples if "le" in s.labels}
    multi = buckets["+Inf"] - buckets["1"]
    print(f"\n32×25 /v1/predict: p50 {p50:.1f} ms, p99 {p99:.1f} ms; batches {buckets}; RSS {rss0} → {rss1} kB")
    assert multi > 0, f"no batch held more than one request: {buckets}"
    # Tolerance: 32 MB, well under one decoded photo per client (32 × 0.8 MB) leaking per request (800 × 0.8 MB).
    assert rss1 - rss0 < 32 * 1024, f"RSS grew {rss0} → {rss1} kB"
