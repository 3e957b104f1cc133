"""The viewer in a real browser: headless Chromium (Debian's ``chromium``) opens ``/`` with the token, starts a
stream of a clip through the page's own form, and shows a face label; a screenshot is kept in ``tmp_path``.

Chromium is driven over the Chrome DevTools Protocol on a pipe (``--remote-debugging-pipe``: JSON messages ending
in NUL on file descriptors 3 and 4), so nothing beyond the browser is needed.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("starlette", reason="edge-affect serve needs the serve extra (starlette, uvicorn)")
pytest.importorskip("uvicorn", reason="edge-affect serve needs the serve extra (starlette, uvicorn)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium; CI's .ci/run installs it)"
)
LABEL = re.compile(r"^Face #\d+: (Neutral|Anger|Disgust|Fear|Happiness|Sadness|Surprise|Other) \d+%$")
#: Waits for the browser (start, page load, first face label): hang guards for a busy machine, not speed claims.
LABEL_WAIT_S = 120.0


class Chromium:
    """Headless Chromium with a CDP session on one page."""

    def __init__(self, url: str, profile: Path) -> None:
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # Above 9 so that the dup2 onto 3 and 4 in the child cannot overwrite one another.
        hi_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        hi_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)

        def child_fds() -> None:
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        args = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
            "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1280,800", url,
        ]
        self.proc = subprocess.Popen(
            args, pass_fds=(3, 4), preexec_fn=child_fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(hi_r)
        os.close(hi_w)
        self.out = os.fdopen(to_browser_w, "wb", buffering=0)
        self.inp = os.fdopen(from_browser_r, "rb", buffering=0)
        self._buf = b""
        self._id = 0
        self.session: str | None = None
        deadline = time.monotonic() + LABEL_WAIT_S
        while True:
            pages = [t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
            if pages or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert pages, "chromium opened no page"
        self.session = self.call("Target.attachToTarget", targetId=pages[0]["targetId"], flatten=True)["sessionId"]

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self._buf:
            chunk = self.inp.read(65536)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        self.out.write(json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.2)
        return None

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        self.inp.close()


def test_viewer_shows_a_face_label(server: Any, video_dir: Path, tmp_path: Path) -> None:
    """The page, opened with /?token=, starts a stream through its own form and lists the face as text."""
    clip = "single_face.mp4" if (video_dir / "single_face.mp4").is_file() else "astronaut_clip.mp4"
    browser = Chromium(f"http://127.0.0.1:{server.port}/?token={server.token}", tmp_path / "profile")
    try:
        assert browser.wait_for("document.readyState === 'complete' && !!document.getElementById('source')", LABEL_WAIT_S)
        browser.js(
            f"document.getElementById('source').value = {json.dumps(clip)};"
            "document.getElementById('start-btn').click(); true"
        )
        t0 = time.monotonic()
        labels = browser.wait_for(
            "Array.from(document.querySelectorAll('.face-label')).map(e => e.textContent).join('\\n')", LABEL_WAIT_S
        )
        seconds = time.monotonic() - t0
        status = browser.js("document.getElementById('status').textContent")
        # the overlay image has arrived (the MJPEG preview of the stream) before the screenshot
        browser.wait_for("document.getElementById('preview').naturalWidth > 0", 60)
        shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        (tmp_path / "viewer.png").write_bytes(shot)
        streams = browser.js("fetch('/v1/streams').then(r => r.json())")
    finally:
        browser.close()
    shot_path = tmp_path / "viewer.png"
    assert labels, f"no face label within {LABEL_WAIT_S:.0f} s (status line: {status!r}; screenshot {shot_path})"
    print(f"\nviewer: {clip} → {labels!r} after {seconds:.1f} s; screenshot {tmp_path / 'viewer.png'}")
    assert all(LABEL.match(line) for line in labels.splitlines()), labels
    assert streams["streams"] and any(s["source"] == clip for s in streams["streams"])
    import cv2

    img = cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[1] == 1280 and float(img.std()) > 5.0  # a drawn page, not a blank one
