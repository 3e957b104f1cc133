"""``edge-affect serve``: parse, check the exposure rules, load the model, run the app under uvicorn.

Starlette and uvicorn (the ``serve`` extra) are imported only here, when the command runs, so the CLI's other
commands work without them.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
from pathlib import Path
from typing import Any

from edge_affect.cliutil import float_range, int_range, positive_int
from edge_affect.iopaths import declare
from edge_affect.runtime import MissingDependencyError
from edge_affect.runtime.cli import _add_backend_args, _console, _load
from edge_affect.runtime.pipeline import add_pipeline_arguments, pipeline_settings
from edge_affect.runtime.sources import STREAM_PREFIXES

log = logging.getLogger(__name__)

SERVE_HINT = "edge-affect serve needs Starlette and uvicorn: pip install 'edge-affect[serve]'"
#: Shortest token accepted (a guessable token on a network port is no protection).
MIN_TOKEN_CHARS = 16
TOKEN_ENV = "EDGE_AFFECT_TOKEN"


def add_commands(subparsers: Any) -> None:
    """Register ``serve`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "serve",
        help="HTTP API (photos, streams as Server-Sent Events and MJPEG, Prometheus metrics) and a browser viewer",
        description="Serve predictions over HTTP: POST /v1/predict, /v1/streams (SSE events, MJPEG overlay), "
        "/metrics, /healthz, and a viewer at /. Binds 127.0.0.1 unless told otherwise; any other host needs --token.",
    )
    _add_backend_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --token)")
    p.add_argument("--port", type=int_range(0, 65535), default=8000, help="TCP port (default 8000; 0 = any free)")
    p.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"require 'Authorization: Bearer TOKEN' on every endpoint but /healthz (default: ${TOKEN_ENV}; "
        f"at least {MIN_TOKEN_CHARS} characters); the viewer takes it once as /?token=TOKEN",
    )
    p.add_argument(
        "--allow-files",
        default=None,
        metavar="DIR",
        help="clients may stream video and image files inside DIR (symlinks resolved); default: no files",
    )
    p.add_argument(
        "--allow-gst",
        action="store_true",
        help="clients may start gst: pipelines (they can read and write any path the server can); "
        "--source on the command line may always",
    )
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="SRC",
        help="start a stream at launch (repeatable): cam:N, rtsp://…, gst:\"…\", a video file or image folder",
    )
    p.add_argument("--max-streams", type=int_range(1, 64), default=4, help="streams running at once (default 4)")
    p.add_argument(
        "--max-body-mb", type=float_range(0.001, 256.0), default=20.0, help="largest /v1/predict body, MB (default 20)"
    )
    p.add_argument(
        "--batch-wait-ms",
        type=float_range(0.0, 1000.0),
        default=2.0,
        help="/v1/predict dynamic batching: longest wait for more requests to join a batch (default 2 ms)",
    )
    p.add_argument("--max-batch", type=int_range(1, 1024), default=32, help="most faces per model call (default 32)")
    p.add_argument("--no-batching", action="store_true", help="each /v1/predict request runs its own model call")
    p.add_argument(
        "--workers",
        type=int_range(1, 256),
        default=4,
        help="/v1/predict requests decoded and detected at once (default 4); more wait their turn",
    )
    p.add_argument("--smooth", action="store_true", help="streams: EMA-smooth predictions per track")
    p.add_argument(
        "--alpha", type=float_range(0.0, 1.0, lo_open=True), default=0.4, help="EMA weight of the newest frame"
    )
    p.add_argument("--max-faces", type=positive_int, default=None, help="keep at most this many faces per frame")
    add_pipeline_arguments(p)
    p.set_defaults(func=cmd_serve)
    declare(p, reads=("artifact", "source", "allow_files"), plain=("providers", "device", "host", "token"))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Any host but loopback needs a token of at least ``MIN_TOKEN_CHARS`` characters (one-line ``ValueError``)."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"--token: {len(token)} characters, expected at least {MIN_TOKEN_CHARS}")
    if not is_loopback(host) and not token:
        raise ValueError(
            f"--host {host}: serving beyond this machine needs --token (or ${TOKEN_ENV}); "
            "every endpoint but /healthz then asks for it"
        )


def _check_sources(specs: list[str]) -> None:
    """``--source`` files must exist (cameras and streams are opened when the server starts)."""
    for spec in specs:
        if spec.startswith(("cam:", "gst:")) or spec.lower().startswith(STREAM_PREFIXES):
            continue
        if not Path(spec).exists():
            raise FileNotFoundError(f"--source {spec} does not exist")


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from edge_affect.serve.app import Service, create_app
        from edge_affect.serve.streams import StreamManager
    except ModuleNotFoundError as e:
        if e.name not in ("uvicorn", "starlette"):
            raise
        raise MissingDependencyError(SERVE_HINT, name=e.name) from None
    check_exposure(args.host, args.token)
    _check_sources(args.source)
    settings = pipeline_settings(args)
    settings.update(smooth=args.smooth, alpha=args.alpha, max_faces=args.max_faces)
    predictor = _load(args)
    try:
        manager = StreamManager(
            predictor,
            allow_files=args.allow_files,
            allow_gst=args.allow_gst,
            max_streams=args.max_streams,
            pipeline_kwargs=settings,
        )
        service = Service(
            predictor,
            batching=not args.no_batching,
            max_batch=args.max_batch,
            batch_wait_ms=args.batch_wait_ms,
            workers=args.workers,
            max_body=int(args.max_body_mb * 1e6),
            manager=manager,
            pipeline_kwargs=settings,
        )
    except BaseException:
        predictor.close()
        raise
    app = create_app(service, token=args.token, sources=args.source)

    class Server(uvicorn.Server):
        """uvicorn, which on Ctrl-C first ends every stream (its SSE and MJPEG clients then finish)."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            # As uvicorn's, without re-raising the signal after the shutdown: a stopped server is a clean exit.
            manager.stop_all()
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5, access_log=False
    )
    server = Server(config)
    con = _console()
    d = predictor.describe()
    con.print(
        f"serving {Path(str(d.get('artifact'))).name} ({predictor.backend} on {predictor.device}) at "
        f"http://{args.host}:{args.port}/ · token {'required' if args.token else 'off (loopback only)'}"
        + (f" · files from {manager.allow_files}" if manager.allow_files else "")
    )
    try:
        server.run()
    finally:
        predictor.close()
    if not server.started:
        raise RuntimeError(f"the server did not start on {args.host}:{args.port} (see the messages above)")
    con.print("server stopped")
    return 0
