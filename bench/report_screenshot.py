"""Open a quickstart report.html in headless Chromium: check it, then take a screenshot.

The check loads a copy of the page (beside it, so the PNGs resolve the same way) with a small
script added that, after the load event, writes onto <body> how many <img> decoded
(naturalWidth > 0), which cells of the results table do not parse as numbers, and the page
height; `chromium --dump-dom` prints that DOM. The screenshot is then taken of report.html itself
at the full page height, and stored as a 256-colour PNG (small enough to commit).

    .venv/bin/python bench/report_screenshot.py runs/quickstart/report.html \
        --png docs/quickstart-report.png

Exit status 1 when an image did not load or a number cell is not a number. Needs `chromium`
(Debian package) on the PATH, or --chromium.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const loaded = images.filter((img) => img.complete && img.naturalWidth > 0).length;
  const bad = [];
  for (const row of document.querySelectorAll("#results tbody tr")) {
    [...row.cells].slice(1).forEach((cell, i) => {
      const text = cell.textContent.replaceAll(",", "").trim();
      if (text === "" || !Number.isFinite(Number(text))) bad.push(`${row.dataset.row}:${i + 1}`);
    });
  }
  const body = document.body;
  body.dataset.images = `${loaded}/${images.length}`;
  body.dataset.rows = String(document.querySelectorAll("#results tbody tr").length);
  body.dataset.badCells = bad.join(" ");
  body.dataset.height = String(document.documentElement.scrollHeight);
});
</script>"""
HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]


def find_chromium(name: str = "chromium") -> str | None:
    return shutil.which(name)


def check_report(report: Path, chromium: str = "chromium", timeout: float = 90) -> dict:
    """{"images": (loaded, total), "rows": n, "bad_cells": [...], "height": px} of the page."""
    report = report.resolve()
    probe = report.with_name(".report-check.html")
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
    try:
        dom = subprocess.run(
            [chromium, *HEADLESS, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        ).stdout
    finally:
        probe.unlink(missing_ok=True)
    body = re.search(r"<body([^>]*)>", dom)
    attributes = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1) if body else ""))
    if "images" not in attributes:
        raise RuntimeError(f"the probe did not run in {chromium}; DOM starts: {dom[:300]!r}")
    loaded, total = (int(n) for n in attributes["images"].split("/"))
    bad = html.unescape(attributes.get("bad-cells", "")).split()
    return {
        "images": (loaded, total),
        "rows": int(attributes["rows"]),
        "bad_cells": bad,
        "height": int(attributes["height"]),
    }


def screenshot(
    report: Path,
    png: Path,
    width: int,
    height: int,
    chromium: str = "chromium",
    timeout: float = 90,
) -> Path:
    """A PNG of the page at width x height, reduced to 256 colours."""
    from PIL import Image

    png = png.resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            chromium,
            *HEADLESS,
            f"--window-size={width},{height}",
            f"--screenshot={png}",
            report.resolve().as_uri(),
        ],
        capture_output=True,
        timeout=timeout,
        check=True,
    )
    with Image.open(png) as image:
        small = image.convert("RGB").quantize(colors=256)
    small.save(png, optimize=True)
    return png


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="report.html of a quickstart run")
    parser.add_argument("--png", type=Path, help="where to write the screenshot")
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--chromium", default="chromium")
    args = parser.parse_args()
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print(f"{args.chromium} not found (apt-get install chromium)", file=sys.stderr)
        return 2
    found = check_report(args.report, chromium)
    loaded, total = found["images"]
    print(
        f"images loaded: {loaded}/{total}; table rows: {found['rows']}; cells not numbers: "
        f"{found['bad_cells'] or 'none'}; page height {found['height']} px"
    )
    ok = total > 0 and loaded == total and found["rows"] > 0 and not found["bad_cells"]
    if args.png and ok:
        png = screenshot(args.report, args.png, args.width, found["height"] + 20, chromium)
        print(f"screenshot: {png} ({png.stat().st_size / 1024:.0f} KiB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
