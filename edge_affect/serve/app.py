"""The HTTP app (Starlette): routes, the guard in front of them (auth, host, body size), JSON errors.

Imported only by ``edge-affect serve`` (``serve.cli``), once Starlette is known to be installed.

Every refusal is ``{"error": "<one line>"}`` with a 4xx status, and the server keeps serving. Auth: with a
token, every route but ``/healthz`` needs ``Authorization: Bearer <token>`` or the cookie the viewer gets by
opening ``/?token=<token>`` once (as Jupyter does; ``SameSite=Strict``, ``HttpOnly``). Without a token the
server only answers requests whose ``Host`` is a loopback name, so a web page cannot reach it through DNS
rebinding.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from edge_affect import __version__
from edge_affect.runtime.pipeline import FacePipeline
from edge_affect.runtime.predictor import Predictor
from edge_affect.serve.batcher import BatchedPredictor, DynamicBatcher
from edge_affect.serve.images import ImageTooLarge, decode_body
from edge_affect.serve.metrics import ServerCounters, render
from edge_affect.serve.streams import FACE_FIELDS, ApiError, StreamManager

log = logging.getLogger(__name__)

#: Largest JSON body (``POST /v1/streams``).
MAX_JSON_BYTES = 64 * 1024
#: Name of the viewer's auth cookie.
COOKIE = "edge_affect_token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
#: Routes as ``/metrics`` labels them (a stream id becomes ``{id}``; anything unknown is ``other``).
_ROUTES = [
    (re.compile(r"^/v1/streams/[^/]+/events$"), "/v1/streams/{id}/events"),
    (re.compile(r"^/v1/streams/[^/]+/preview\.mjpg$"), "/v1/streams/{id}/preview.mjpg"),
    (re.compile(r"^/v1/streams/[^/]+$"), "/v1/streams/{id}"),
]
_PLAIN_ROUTES = {"/", "/healthz", "/metrics", "/v1/predict", "/v1/streams"}
#: Seconds between SSE keep-alive comments on a quiet stream.
KEEPALIVE_S = 15.0


def route_label(path: str) -> str:
    if path in _PLAIN_ROUTES:
        return path
    return next((label for rx, label in _ROUTES if rx.match(path)), "other")


class Service:
    """What the routes share: the model, the batched predict pipeline, the streams and the counters."""

    def __init__(
        self,
        predictor: Predictor,
        *,
        batching: bool = True,
        max_batch: int = 32,
        batch_wait_ms: float = 2.0,
        workers: int = 4,
        max_body: int = 20 * 2**20,
        manager: StreamManager,
        pipeline_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.predictor = predictor
        self.counters = ServerCounters()
        self.batcher = (
            DynamicBatcher(
                predictor, max_batch=max_batch, max_wait_ms=batch_wait_ms, pending=lambda: self.counters.in_flight
            )
            if batching
            else None
        )
        # Still photos: no tracking, so one pipeline serves every request, in parallel on ONNX Runtime.
        kwargs = {k: v for k, v in (pipeline_kwargs or {}).items() if k in ("det_size", "max_faces", "views")}
        model = BatchedPredictor(predictor, self.batcher) if self.batcher else predictor
        self.photo_pipeline = FacePipeline(model, track=False, **kwargs)  # type: ignore[arg-type]
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="predict")
        self.max_body = max_body
        self.manager = manager
        self.started = time.time()

    def predict_bytes(self, body: bytes) -> dict[str, Any]:
        """An encoded photo → ``{"faces": [...], "image": {...}, "latency_ms": {...}}`` (runs in a worker)."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        rgb = decode_body(body)
        timings["decode"] = time.perf_counter() - t0
        records = self.photo_pipeline.process(rgb, timings)
        faces = [{k: r.get(k) for k in FACE_FIELDS} for r in records if r.get("box") is not None]
        self.counters.predicted(timings, len(faces))
        return {
            "faces": faces,
            "image": {"width": int(rgb.shape[1]), "height": int(rgb.shape[0])},
            "latency_ms": {k: round(v * 1000.0, 3) for k, v in timings.items()},
        }

    def health(self) -> dict[str, Any]:
        streams = self.manager.list()
        d = self.predictor.describe()
        return {
            "status": "ok",
            "version": __version__,
            "model": d.get("model_name"),
            "artifact": d.get("artifact"),
            "precision": d.get("precision"),
            "backend": self.predictor.backend,
            "device": self.predictor.device,
            "batching": self.batcher is not None,
            "uptime_s": round(time.time() - self.started, 3),
            "streams": {"running": sum(s.running for s in streams), "total": len(streams)},
        }

    def close(self) -> None:
        self.manager.stop_all()
        self.manager.join_all()
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self.batcher is not None:
            self.batcher.close()
        self.photo_pipeline.close()


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Guard:
    """ASGI middleware in front of every route: host check, auth, declared body size, request counting."""

    def __init__(self, app: Any, service: Service, token: str | None) -> None:
        self.app = app
        self.service = service
        self.token = token

    def _authorized(self, headers: dict[str, str]) -> bool:
        assert self.token is not None
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and hmac.compare_digest(auth[7:].strip().encode(), self.token.encode()):
            return True
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value.encode(), self.token.encode()):
                return True
        return False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        status_seen = [0]

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status_seen[0] = message["status"]
            await send(message)

        try:
            refusal = self._check(scope, path, method)
            if refusal is not None:
                await refusal(scope, receive, counting_send)
            else:
                await self.app(scope, receive, counting_send)
        finally:
            self.service.counters.request(method, route_label(path), status_seen[0] or 500)

    def _check(self, scope: Any, path: str, method: str) -> Response | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.token is None:
            host = headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
            if name.lower() not in LOOPBACK_HOSTS:
                return _json_error(403, f"Host {host!r}: this server answers loopback names only (start it with --token to serve others)")
        elif path != "/healthz" and not self._authorized(headers):
            query = QueryParams(scope.get("query_string", b"").decode("latin-1"))
            given = query.get("token")
            if path == "/" and method == "GET" and given and hmac.compare_digest(given.encode(), self.token.encode()):
                resp = RedirectResponse("/", status_code=303)
                resp.set_cookie(COOKIE, self.token, httponly=True, samesite="strict", path="/")
                return resp
            return _json_error(401, "missing or wrong token: send Authorization: Bearer <token>",
                               {"WWW-Authenticate": "Bearer"})
        length = headers.get("content-length")
        if length is not None:
            limit = self.service.max_body if path == "/v1/predict" else MAX_JSON_BYTES
            if not length.isdigit():
                return _json_error(400, f"Content-Length {length!r}: expected a number of bytes")
            if int(length) > limit:
                return _json_error(413, f"body of {int(length)} bytes exceeds the limit of {limit} bytes")
        return None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as more than ``limit`` bytes have arrived (chunked bodies too)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _after(request: Request) -> int | None:
    """Replay point of an event subscription: ``Last-Event-ID`` (events after it) or ``?from=N`` (from N on)."""
    last = request.headers.get("last-event-id")
    start = request.query_params.get("from")
    try:
        if last is not None:
            return int(last)
        if start is not None:
            return int(start) - 1
    except ValueError:
        raise ApiError(400, f"event id {last or start!r}: expected an integer") from None
    return None


def create_app(service: Service, *, token: str | None = None, sources: list[str] | None = None) -> Starlette:
    """The Starlette app; ``sources`` (``--source``) start when it starts."""
    viewer = resources.files("edge_affect.serve").joinpath("viewer.html").read_text(encoding="utf-8")
    manager = service.manager

    async def healthz(request: Request) -> Response:
        return JSONResponse(service.health())

    async def index(request: Request) -> Response:
        return HTMLResponse(viewer, headers={"Cache-Control": "no-store"})

    async def metrics(request: Request) -> Response:
        batches = service.batcher.stats() if service.batcher else None
        text = render(service.counters, time.time() - service.started, batches, manager.list())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def predict(request: Request) -> Response:
        body = await read_body(request, service.max_body)
        loop = asyncio.get_running_loop()
        with service.counters._lock:
            service.counters.in_flight += 1
        try:
            result = await loop.run_in_executor(service.executor, service.predict_bytes, body)
        except ImageTooLarge as e:
            raise ApiError(413, str(e)) from None
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        finally:
            with service.counters._lock:
                service.counters.in_flight -= 1
        return JSONResponse(result)

    async def streams_list(request: Request) -> Response:
        return JSONResponse({"streams": [s.describe() for s in manager.list()]})

    async def streams_create(request: Request) -> Response:
        body = await read_body(request, MAX_JSON_BYTES)
        try:
            spec = json.loads(body or b"null")
        except ValueError as e:
            raise ApiError(400, f"body: not JSON ({e}); expected {{\"source\": \"...\"}}") from None
        if not isinstance(spec, dict) or "source" not in spec:
            raise ApiError(400, 'body: expected a JSON object {"source": "..."}')
        loop = asyncio.get_running_loop()
        stream = await loop.run_in_executor(None, manager.start, spec["source"], loop)
        return JSONResponse(stream.describe(), status_code=201, headers={"Location": f"/v1/streams/{stream.id}"})

    async def stream_get(request: Request) -> Response:
        return JSONResponse(manager.get(request.path_params["sid"]).describe())

    async def stream_delete(request: Request) -> Response:
        stream = manager.delete(request.path_params["sid"])
        return JSONResponse({"id": stream.id, "state": "stopping" if stream.running else stream.state})

    async def stream_events(request: Request) -> Response:
        stream = manager.get(request.path_params["sid"])
        sub, replay = stream.subscribe_events(_after(request))

        async def body() -> Any:
            try:
                yield "retry: 2000\n\n"
                for seq, text in replay:
                    yield f"id: {seq}\ndata: {text}\n\n"
                while True:
                    try:
                        item = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if item is not None and not isinstance(item, tuple):  # END
                        end = {"stream": stream.id, "state": stream.state, "reason": stream.end_reason,
                               "frames": stream.frames}
                        yield f"event: end\ndata: {json.dumps(end)}\n\n"
                        return
                    seq, text = item
                    yield f"id: {seq}\ndata: {text}\n\n"
            finally:
                stream.unsubscribe(sub)

        return StreamingResponse(
            body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    async def stream_preview(request: Request) -> Response:
        stream = manager.get(request.path_params["sid"])
        sub = stream.subscribe_preview()

        async def body() -> Any:
            try:
                while True:
                    item = await sub.queue.get()
                    if not isinstance(item, bytes):  # END
                        return
                    yield (
                        b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                        + str(len(item)).encode()
                        + b"\r\n\r\n"
                        + item
                        + b"\r\n"
                    )
            finally:
                stream.unsubscribe(sub)

        return StreamingResponse(
            body(), media_type="multipart/x-mixed-replace; boundary=frame", headers={"Cache-Control": "no-cache"}
        )

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _json_error(exc.status, exc.message)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        detail = exc.detail if exc.status_code != 404 else f"{request.url.path}: no such endpoint"
        return _json_error(exc.status_code, str(detail), getattr(exc, "headers", None))

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path)
        return _json_error(500, f"internal error: {type(exc).__name__}")

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            for spec in sources or []:
                try:
                    stream = await loop.run_in_executor(None, lambda s=spec: manager.start(s, loop, trusted=True))
                except ApiError as e:
                    raise ValueError(f"--source {spec}: {e.message}") from None
                log.info("serving stream %s: %s", stream.id, spec)
            yield
        finally:
            await loop.run_in_executor(None, service.close)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/predict", predict, methods=["POST"]),
        Route("/v1/streams", streams_list, methods=["GET"]),
        Route("/v1/streams", streams_create, methods=["POST"]),
        Route("/v1/streams/{sid}", stream_get, methods=["GET"]),
        Route("/v1/streams/{sid}", stream_delete, methods=["DELETE"]),
        Route("/v1/streams/{sid}/events", stream_events, methods=["GET"]),
        Route("/v1/streams/{sid}/preview.mjpg", stream_preview, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: internal_error},
    )
    app.add_middleware(Guard, service=service, token=token)
    return app

