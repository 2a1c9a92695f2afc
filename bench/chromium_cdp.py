"""Drive headless Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe): no
websocket library, no driver binary. Chromium reads commands on fd 3 and writes answers on fd 4,
each a JSON message ended by a NUL byte.

    with Browser() as browser:
        browser.open("http://127.0.0.1:8000/", ready="document.body.dataset.ready === 'true'")
        browser.type("#form-classify textarea[name=text]", "a fine film")
        browser.click("#form-classify button[type=submit]")
        browser.wait("document.querySelector('#result').dataset.state === 'done'")
        text = browser.evaluate("document.querySelector('#result').innerText")
        browser.screenshot(Path("page.png"))

Used by tests/test_serve_page.py and bench/serve_screenshot.py. Needs `chromium` (Debian).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]


def find_chromium(name: str = "chromium") -> str | None:
    return shutil.which(name)


class Browser:
    def __init__(self, chromium: str = "chromium", width: int = 900, height: int = 700):
        self.profile = tempfile.TemporaryDirectory(prefix="muppets-chromium-")
        to_browser, self.commands = os.pipe()  # we write commands, Chromium reads fd 3
        self.answers, from_browser = os.pipe()  # Chromium writes fd 4, we read answers

        def on_fds_3_and_4():
            high_in = fcntl.fcntl(to_browser, fcntl.F_DUPFD, 10)  # out of the way of 3 and 4
            high_out = fcntl.fcntl(from_browser, fcntl.F_DUPFD, 10)
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        argv = [chromium, *FLAGS, "--remote-debugging-pipe", f"--window-size={width},{height}"]
        argv += [f"--user-data-dir={self.profile.name}", "about:blank"]
        self.process = subprocess.Popen(
            argv,
            pass_fds=(3, 4),
            preexec_fn=on_fds_3_and_4,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser), os.close(from_browser)
        self.buffer, self.next_id, self.session = b"", 0, None
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        self.session = attached["sessionId"]
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.send("Emulation.setDeviceMetricsOverride", metrics)

    def send(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        """One command and its result (events in between are skipped)."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self.buffer:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{method}: no answer from Chromium in {timeout} s")
                chunk = os.read(self.answers, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"{method}: Chromium closed the pipe")
                self.buffer += chunk
            raw, _, self.buffer = self.buffer.partition(b"\0")
            answer = json.loads(raw)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def evaluate(self, expression: str):
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        probe = f"(() => {{ try {{ return Boolean({expression}); }} catch {{ return false; }} }})()"
        while not self.evaluate(probe):  # false while the page is still loading
            if time.monotonic() > deadline:
                raise TimeoutError(f"never true: {expression}")
            time.sleep(0.05)

    def open(self, url: str, ready: str = "document.readyState === 'complete'") -> None:
        self.send("Page.navigate", {"url": url})
        self.wait(ready)

    def type(self, selector: str, text: str) -> None:
        """Focus the field, clear it, and type `text` as keyboard input would insert it."""
        self.evaluate(f"(e => {{ e.focus(); e.select(); }})(document.querySelector({selector!r}))")
        self.send("Input.insertText", {"text": text})

    def click(self, selector: str) -> None:
        """A mouse click at the centre of the element."""
        box = self.evaluate(
            f"(r => [r.x + r.width / 2, r.y + r.height / 2])"
            f"(document.querySelector({selector!r}).getBoundingClientRect())"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1},
            )

    def screenshot(self, png: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        png.parent.mkdir(parents=True, exist_ok=True)
        png.write_bytes(base64.b64decode(data))
        return png

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.commands), os.close(self.answers)
        self.profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
