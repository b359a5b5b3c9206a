"""Test photos made on the fly, shared by the tests and the benchmarks."""

from __future__ import annotations

import io

from PIL import Image


def twelve_megapixel_jpeg() -> bytes:
    """A 4000x3000 JPEG with photo-like detail (noise compresses as badly as foliage), ~8 MB."""
    noise = Image.effect_noise((4000, 3000), 60)
    gradient = Image.linear_gradient("L").resize((4000, 3000))
    image = Image.merge("RGB", [noise, gradient, noise.transpose(Image.Transpose.ROTATE_180)])
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92)
    return out.getvalue()
