"""Make the app icons (PNG sizes, Windows .ico, macOS .icns) from resources/icons/camelid.svg.

Qt's SVG renderer rasterises (Pillow cannot read SVG); Pillow writes the
multi-size .ico and .icns containers (Qt's own writers store one size per file).
Run: .venv/bin/python installers/make_icons.py [--out build/icons]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SVG = ROOT / "resources" / "icons" / "camelid.svg"
PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512, 1024)


def render_pngs(out: Path) -> dict[int, Path]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication([])
    renderer = QSvgRenderer(str(SVG))
    if not renderer.isValid():
        raise SystemExit(f"{SVG} is not a valid SVG")
    made = {}
    for size in PNG_SIZES:
        image = QImage(size, size, QImage.Format.Format_ARGB32)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        path = out / f"camelid-{size}.png"
        if not image.save(str(path)):
            raise SystemExit(f"could not write {path}")
        made[size] = path
    return made


def make_containers(pngs: dict[int, Path], out: Path) -> tuple[Path, Path]:
    from PIL import Image

    largest = Image.open(pngs[1024])
    ico = out / "camelid.ico"
    Image.open(pngs[256]).save(ico, sizes=[(s, s) for s in (16, 24, 32, 48, 64, 128, 256)])
    icns = out / "camelid.icns"
    largest.save(icns)  # Pillow writes every standard icns size from the 1024 px master
    return ico, icns


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "icons")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pngs = render_pngs(args.out)
    ico, icns = make_containers(pngs, args.out)
    for path in [*pngs.values(), ico, icns]:
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}  {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
