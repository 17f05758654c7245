"""Take a screenshot of a `migrator report --html` page in headless Chromium (Debian's
`chromium` package) and check it is not blank. The README's picture comes from here:

    python scripts/report_screenshot.py report.html docs/report.png

Exit 0 with the PNG written; 1 if the page rendered blank; 2 if chromium is absent.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(html: Path, png: Path, *, width: int = 1200, height: int = 1400, timeout: float = 60) -> Path:
    """Render html (a local file: the page needs no network) into png."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="migrator-chromium-") as profile:
        subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={png.absolute()}", html.absolute().as_uri()],
                       check=True, timeout=timeout, capture_output=True)
    return png


def ink(png: Path) -> dict[str, float]:
    """How much of the picture is drawn: the share of non-white pixels, and of coloured
    ones (the timeline's and pause windows' bars), on a 4x downscale."""
    from PIL import Image

    with Image.open(png) as image:
        small = image.convert("RGB").resize((image.width // 4, image.height // 4))
        flat = getattr(small, "get_flattened_data", None) or small.getdata
        pixels = list(flat())
    drawn = sum(1 for r, g, b in pixels if min(r, g, b) < 235)
    coloured = sum(1 for r, g, b in pixels if max(r, g, b) - min(r, g, b) > 60)
    return {"drawn": drawn / len(pixels), "coloured": coloured / len(pixels)}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    if chromium() is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    png = screenshot(Path(argv[0]), Path(argv[1]))
    seen = ink(png)
    print(f"{png}: {seen['drawn']:.1%} drawn, {seen['coloured']:.1%} coloured")
    return 0 if seen["drawn"] > 0.02 and seen["coloured"] > 0.005 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
