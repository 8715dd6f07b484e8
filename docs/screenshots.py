"""The documentation's screenshots, made from a demo run, never by hand.

    python docs/screenshots.py [--demo ens-demo]

Uses the folder `ens demo` wrote (runs the demo into it when it is absent), writes the audit
page there (`ens audit --html audit.html`), and photographs both pages with headless Chromium
into docs/img/report.png and docs/img/audit.png, reduced to a 256-colour palette so that each
stays under 300 KB. Needs torch (the demo) and Chromium (tests/install-chromium).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
LIMIT = 300_000  # bytes a screenshot may take in the repository
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1"]


def ens(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "ensembler", *args], cwd=cwd, check=True)


def photograph(page: Path, png: Path, height: int) -> None:
    """`page` as a PNG of 1280 x `height` pixels, palette-reduced (Pillow) under `LIMIT`."""
    from PIL import Image

    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if chromium is None:
        raise SystemExit("no Chromium: run tests/install-chromium")
    with tempfile.TemporaryDirectory() as profile:
        raw = Path(profile) / "shot.png"
        subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size=1280,{height}", f"--screenshot={raw}", page.as_uri()], check=True, capture_output=True, timeout=180)
        image = Image.open(raw).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        png.parent.mkdir(parents=True, exist_ok=True)
        image.save(png, optimize=True)
    size = png.stat().st_size
    if size > LIMIT:
        raise SystemExit(f"{png}: {size:,} bytes, over {LIMIT:,}")
    print(f"wrote {png.relative_to(DOCS.parent)} ({size:,} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=Path("ens-demo"), help="the folder ens demo wrote (run into it when absent)")
    args = parser.parse_args()
    demo = args.demo.absolute()
    if not (demo / "report.html").is_file():
        ens("demo", "--dir", str(demo), cwd=demo.parent)
    ens("audit", "--html", "audit.html", "--top", "0", cwd=demo)
    photograph(demo / "report.html", DOCS / "img" / "report.png", 1400)
    photograph(demo / "audit.html", DOCS / "img" / "audit.png", 640)


if __name__ == "__main__":
    main()
