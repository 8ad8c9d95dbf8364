"""Render the site's pages in headless Chromium and report what a reader would hit.

    chromium = find_chromium()                       # None when not installed (CI may skip)
    results = render(pages, chromium, screenshots=Path("shots"))

Talks the DevTools protocol over a pipe (`--remote-debugging-pipe`: JSON messages separated by NUL
on file descriptors 3 and 4), so it needs nothing beyond the standard library and the browser. Per
page, at a phone viewport (390 x 844, mobile) it records console errors and uncaught exceptions,
failed loads, images that did not decode, whether the page scrolls sideways, the verdict counts in
the index's table, and a PNG screenshot of the first screen.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
_PROBE = """(() => {
  const imgs = [...document.images];
  const counts = [...document.querySelectorAll('tr[data-paper][data-scale] td[data-verdict]')].map(
    td => [td.closest('tr').dataset.paper, td.closest('tr').dataset.scale, td.dataset.verdict,
           Number(td.textContent.trim())]);
  return JSON.stringify({
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
    images: imgs.length,
    overflow: document.documentElement.scrollWidth - window.innerWidth,
    height: document.documentElement.scrollHeight,
    title: document.title,
    counts: counts,
  });
})()"""


def find_chromium() -> str | None:
    """$REPRO_CHROMIUM, else the first Chromium/Chrome on PATH; None if there is none."""
    env = os.environ.get("REPRO_CHROMIUM")
    if env:
        return env if Path(env).exists() or shutil.which(env) else None
    return next((p for c in CANDIDATES if (p := shutil.which(c))), None)


@dataclass
class PageResult:
    """What rendering one page found; `ok` when there was nothing wrong."""

    path: Path
    console_errors: list[str] = field(default_factory=list)
    failed_loads: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    images: int = 0
    overflow_px: int = 0
    title: str = ""
    counts: list[tuple[str, str, str, int]] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def ok(self) -> bool:
        return not (self.console_errors or self.failed_loads or self.broken_images or self.overflow_px > 0)

    def problems(self) -> list[str]:
        out = [f"{self.path.name}: console: {e}" for e in self.console_errors]
        out += [f"{self.path.name}: failed to load {u}" for u in self.failed_loads]
        out += [f"{self.path.name}: image did not load: {u}" for u in self.broken_images]
        if self.overflow_px > 0:
            out.append(f"{self.path.name}: page scrolls sideways by {self.overflow_px}px at phone width")
        return out


class _Pipe:
    """A DevTools-protocol session over --remote-debugging-pipe."""

    def __init__(self, chromium: str, timeout: float) -> None:
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def fds() -> None:  # in the child: fd 3 = its input, fd 4 = its output
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        args = [
            chromium, "--headless", "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
            "--disable-gpu", "--disable-extensions", "--hide-scrollbars", "about:blank",
        ]  # fmt: skip
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self.proc = subprocess.Popen(
            args, pass_fds=(3, 4), preexec_fn=fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf, self._next, self.timeout = b"", 0, timeout
        self.events: list[dict[str, Any]] = []

    def _read(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                raise ConnectionError("Chromium closed the DevTools pipe")
            self._buf += chunk
        message, _, self._buf = self._buf.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict[str, Any]:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str, deadline: float) -> None:
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._read(deadline))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)


def _errors(events: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    console, failed = [], []
    for e in events:
        method, params = e.get("method"), e.get("params") or {}
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
        elif method == "Runtime.exceptionThrown":
            console.append((params.get("exceptionDetails") or {}).get("text", "exception"))
        elif method == "Log.entryAdded" and (params.get("entry") or {}).get("level") == "error":
            entry = params["entry"]
            console.append(f"{entry.get('text', '')} {entry.get('url', '')}".strip())
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            failed.append(f"{params.get('errorText', '?')} (request {params.get('requestId')})")
    return console, failed


def render(
    pages: list[Path], chromium: str, screenshots: Path | None = None, timeout: float = 60.0
) -> list[PageResult]:
    """Open each page (a file) at phone size in one headless Chromium; see the module docstring."""
    pipe = _Pipe(chromium, timeout)
    results = []
    try:
        for path in pages:
            target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.call(f"{domain}.enable", None, session)
            pipe.call("Emulation.setDeviceMetricsOverride", PHONE, session)
            pipe.events.clear()
            pipe.call("Page.navigate", {"url": Path(path).resolve().as_uri()}, session)
            pipe.wait_for("Page.loadEventFired", time.monotonic() + timeout)
            # Lazy images below the fold load once in view: scroll through, then back.
            pipe.call(
                "Runtime.evaluate",
                {"expression": "document.querySelectorAll('img').forEach(i => i.loading = 'eager')",
                 "awaitPromise": False},
                session,
            )  # fmt: skip
            pipe.call(
                "Runtime.evaluate",
                {"expression": "Promise.all([...document.images].map(i => i.decode().catch(() => 0)))",
                 "awaitPromise": True},
                session,
            )  # fmt: skip
            probed = pipe.call("Runtime.evaluate", {"expression": _PROBE, "returnByValue": True}, session)
            probe = json.loads(probed["result"]["value"])
            console, failed = _errors(pipe.events)
            result = PageResult(
                Path(path), console, failed, probe["broken"], probe["images"], int(probe["overflow"]),
                probe["title"], [tuple(c) for c in probe["counts"]],
            )  # fmt: skip
            if screenshots is not None:
                shot = pipe.call("Page.captureScreenshot", {"format": "png"}, session)
                screenshots.mkdir(parents=True, exist_ok=True)
                name = "_".join(Path(path).resolve().parts[-2:]).replace(".html", ".png")
                result.screenshot = screenshots / name
                result.screenshot.write_bytes(base64.b64decode(shot["data"]))
            pipe.call("Target.closeTarget", {"targetId": target})
            results.append(result)
    finally:
        pipe.close()
    return results
