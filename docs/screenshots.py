"""Writes the README's pictures to docs/images/ (``make screenshots``).

Drives a real JupyterLab in headless Chromium through a short session, the
one ``tests/browser/test_views_in_lab.py`` asserts (so each picture shows a
layout a test checks): the live view mid-fit, the final result, the card's
Layers tab and the feature view. Each PNG is then cut to a small palette
(UI pictures have few colours), which keeps it well under 80 KB.

Usage: python docs/screenshots.py  (needs Chromium at /usr/bin/chromium and playwright)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
PICTURES = ("live-view.png", "final-result.png", "card-layers.png", "feature-view.png")
LIMIT_KB = 80


def shrink(path: Path, colors: int = 96) -> None:
    """Rewrites ``path`` as an optimized palette PNG."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=colors, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in PICTURES:
        (OUT / name).unlink(missing_ok=True)
    env = dict(os.environ, KERNELKIT_SCREENSHOTS=str(OUT))
    env.setdefault("KERAS_BACKEND", "tensorflow")
    test = "tests/browser/test_views_in_lab.py"
    code = subprocess.call(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", test],
        cwd=ROOT,
        env=env,
    )
    if code:
        print(f"screenshots: {test} failed, pictures not written", file=sys.stderr)
        return code
    too_big = []
    for name in PICTURES:
        path = OUT / name
        shrink(path)
        size = path.stat().st_size / 1024
        print(f"{path.relative_to(ROOT)}: {size:.0f} KB")
        if size > LIMIT_KB:
            too_big.append(name)
    if too_big:
        print(f"screenshots: over {LIMIT_KB} KB: {', '.join(too_big)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
