"""The photos the notebooks show: the bundled demo photos, and a small copy of one to show
inline (the demo's side-by-side view and the preset editor's comparison)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from ..config import IMAGES_DIR, Config


def demo_photos(cfg: Config, images_dir: Path = IMAGES_DIR) -> list[Path]:
    """The bundled photos, minus the in-context example (asking about it would be cheating)."""
    example = Path(cfg.example_image).name
    return sorted(p for p in images_dir.glob("*.jp*g") if p.name != example)


def thumbnail_data_uri(path: Path, size: int = 480) -> str | None:
    """A small JPEG of the photo as a data URI, or None when it is not a readable image."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            small = ImageOps.exif_transpose(image).convert("RGB")
            small.thumbnail((size, size))
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
