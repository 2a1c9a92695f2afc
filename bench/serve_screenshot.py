"""A screenshot of the `muppets serve` page with one route's answer, taken in headless Chromium.

    .venv/bin/python bench/serve_screenshot.py \
        --model runs/quickstart/bert-finetuned/seeds-1-2-3/size-all/seed-1 \
        --text "a gripping , funny and moving film ." --png docs/serve-page.png

The server runs in this process (loopback, a free port); the page is driven as a user would:
the route's tab, the text typed, the button clicked. Stored as a 256-colour PNG (small enough to
commit). Needs `chromium` (Debian package).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chromium_cdp import Browser, find_chromium  # noqa: E402

FIELDS = {"classify": "textarea[name=text]", "tag": "textarea[name=text]"}
FIELDS |= {"qa": "input[name=question]", "fill-mask": "input[name=text]"}
FIELDS |= {"embed": "textarea[name=text]"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--route", default=None, help="default: the model's first route")
    parser.add_argument("--text", default=None, help="typed into the route's first field")
    parser.add_argument("--png", type=Path, required=True)
    parser.add_argument("--width", type=int, default=820)
    parser.add_argument("--height", type=int, default=560)
    args = parser.parse_args()
    if find_chromium() is None:
        print("chromium not found (apt-get install chromium)", file=sys.stderr)
        return 2
    import uvicorn
    from PIL import Image

    from muppets.serve.run import ServeConfig, build

    app, line = build(ServeConfig(model=args.model, threads=1))
    print(line)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with Browser(width=args.width, height=args.height) as browser:
            browser.open(f"http://127.0.0.1:{port}/", "document.body.dataset.ready === 'true'")
            route = args.route or browser.evaluate(
                "document.querySelector('nav button').dataset.route"
            )
            browser.click(f"nav button[data-route={route}]")
            if args.text:
                browser.type(f"#form-{route} {FIELDS[route]}", args.text)
            browser.click(f"#form-{route} button[type=submit]")
            browser.wait("document.querySelector('#result').dataset.state === 'done'")
            print("result:", browser.evaluate("document.querySelector('#result').innerText"))
            png = browser.screenshot(args.png.resolve())
    finally:
        server.should_exit = True
        thread.join(30)
    with Image.open(png) as image:
        small = image.convert("RGB").quantize(colors=256)
    small.save(png, optimize=True)
    print(f"screenshot: {png} ({png.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
