"""Images sent inline: data: URIs, and the bounded decoding and resizing with Pillow when a
photo or an example must be made smaller, for the data-uri transport's payload limit or the
container's image token budget (budget.py), and the web page's gallery copies (web_photos.py).
Imported only then: the default profile with the url transport never needs it, and Pillow,
imported only here, is in the function's zip only for the configurations that resize.
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import warnings
from collections.abc import Iterator
from typing import Any

from .errors import BadImage, Failure, scrub
from .request import SentImage
from .settings import Settings
from .sniff import sniff_image

SHRINK_MAX_SIDE = 2048  # the data-uri transport sends at most this many pixels per side
# Pillow decodes WebP through libwebp's animation decoder: two RGBA canvases, a copy handed to
# Python and the image itself, about 16 bytes per pixel (a 49 MP WebP peaked at 790 MB). The
# data-uri transport shrinks a WebP only up to this size (~200 MB), a 4096x3072 photo; a larger
# one that does not fit the payload as it is gets an error record (export it as JPEG).
WEBP_DECODE_MAX_PIXELS = 12_600_000


def inline(
    data: bytes, fmt: str, stored: tuple[int, int], target: tuple[int, int], budget: int,
    settings: Settings,
) -> SentImage:
    """``data`` inline as a data: URI of at most ``budget`` characters, at most ``target``
    pixels (the size its tokens allow); resized only when it must be."""
    prefix = f"data:image/{fmt};base64,"
    if target == stored and len(prefix) + _base64_size(len(data)) <= budget:
        return SentImage(prefix + base64.b64encode(data).decode("ascii"), *stored)
    prefix = "data:image/jpeg;base64,"
    max_bytes = (budget - len(prefix)) * 3 // 4
    if target == stored:  # within its tokens, over its bytes: SHRINK_MAX_SIDE and bytes rule
        jpeg, size = _resized(data, max_bytes, settings.max_image_pixels)
    else:  # the size its tokens allow, smaller only if the bytes need it
        jpeg, size = _resized(data, max_bytes, settings.max_image_pixels, target)
    return SentImage(prefix + base64.b64encode(jpeg).decode("ascii"), *size, resized=True)


def jpeg_within(data: bytes, max_bytes: int, max_pixels: int,
                size: tuple[int, int] | None = None) -> tuple[bytes, tuple[int, int]]:
    """(JPEG of at most ``max_bytes``, its size): for a model that takes image bytes rather
    than data: URIs (Bedrock's Converse); see ``_resized`` for ``size``."""
    return _resized(data, max_bytes, max_pixels, size)


def _data_uri(data: bytes, fmt: str, budget: int, max_pixels: int = 50_000_000) -> str:
    """``data:`` URI of at most ``budget`` characters; re-encoded smaller when needed."""
    prefix = f"data:image/{fmt};base64,"
    if len(prefix) + _base64_size(len(data)) > budget:
        prefix = "data:image/jpeg;base64,"
        data = _shrink(data, (budget - len(prefix)) * 3 // 4, max_pixels)
    return prefix + base64.b64encode(data).decode("ascii")


def _base64_size(length: int) -> int:
    return 4 * math.ceil(length / 3)  # base64: 4 characters per 3 bytes


# EXIF orientation -> the Image.transpose method that makes the photo upright.
_ORIENTATION = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}  # FLIP_LEFT_RIGHT=0 ... TRANSVERSE=6


def _decode_small(data: bytes, max_side: int, max_pixels: int) -> Any:
    """Decode ``data`` to an upright RGB image no larger than needed for ``max_side``.

    Memory is what the function can afford (512 MB): nothing decodes more than the image's
    own pixels once, in its own mode (WebP aside: see WEBP_DECODE_MAX_PIXELS). JPEG decodes
    at 1/2, 1/4 or 1/8 scale through draft() (a 50 MP photo then takes ~40 MB instead of
    150 MB); the other formats (PNG, GIF, WebP,
    BMP) cannot decode at a smaller scale, so they are reduced in place right after decoding
    (box filter, or nearest for palette images) and the full-size pixels are freed before any
    conversion or resampling copy is made. Pillow's own bomb check is set to the handler's
    pixel limit, and a size over it is refused before anything is decoded.
    """
    from PIL import Image

    fmt, width, height = sniff_image(data)
    if fmt == "webp" and width * height > WEBP_DECODE_MAX_PIXELS:  # checked before Pillow
        raise BadImage(  # allocates the decoder's canvases
            "image_too_large",
            f"This WebP image is {width}x{height} pixels, too large to shrink within the "
            f"function's memory (WebP up to {WEBP_DECODE_MAX_PIXELS / 1e6:g} megapixels) so "
            "that it fits the request: export it as JPEG, or resize it, and upload again.",
        )
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise BadImage(
                    "image_too_large",
                    f"The image decodes to {width}x{height} pixels, over the "
                    f"{max_pixels / 1e6:g} megapixel limit: resize it and upload again.",
                )
            scale = min(1.0, max_side / max(width, height))
            if image.format == "JPEG":  # decode at a reduced scale, no smaller than needed
                image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            orientation = image.getexif().get(0x0112, 1)
            image.load()
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    factor = max(image.size) // max_side
    if factor >= 2:  # the reduced copy replaces the full-size pixels, which are freed
        if image.mode in ("P", "1", "I;16", "I;16B", "I;16L"):  # reduce() takes no palette
            image = image.resize((max(1, image.width // factor), max(1, image.height // factor)),
                                 Image.Resampling.NEAREST)
        else:
            image = image.reduce(factor)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    if orientation in _ORIENTATION:  # keep it upright
        image = image.transpose(Image.Transpose(_ORIENTATION[orientation]))
    return image


def _pillow() -> Any:
    """Pillow's Image module, or a configuration error when the package lacks it."""
    try:
        from PIL import Image
    except ImportError:
        raise Failure(
            "configuration_error",
            "This photo must be resized (to fit the payload limit, or the model container's "
            "image token budget) and the function's package has no Pillow: redeploy with "
            "`visual-tourism up`, which adds Pillow for every profile that resizes images.",
        ) from None
    return Image


def thumbnail(data: bytes, max_side: int, max_pixels: int = 50_000_000) -> bytes:
    """A small JPEG of the photo for the web page's gallery: at most ``max_side`` pixels on
    the long side, upright, and nothing but pixels (no EXIF, and so no GPS position or camera
    serial number; no XMP, ICC profile or comment): the image is copied into a new one before
    it is saved, so nothing of the original's ``info`` can follow it."""
    Image = _pillow()
    with _decoding(Image):
        image = _decode_small(data, max_side, max_pixels)
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=2.0)
        clean = Image.new("RGB", image.size)
        clean.paste(image)
        out = io.BytesIO()
        clean.save(out, "JPEG", quality=80, optimize=True, progressive=True)
        return out.getvalue()


@contextlib.contextmanager
def _decoding(Image: Any) -> Iterator[None]:  # noqa: N803 - Pillow's module, imported late
    """Pillow's decoding failures as the record's error codes."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(
            "image_too_large",
            f"The image is too large to decode ({scrub(str(exc), 200)}): resize it (e.g. "
            "4000 pixels wide) and upload again.",
        ) from None
    except (OSError, ValueError, SyntaxError, MemoryError) as exc:
        raise BadImage(
            "corrupt_image",
            f"The image cannot be decoded ({scrub(str(exc), 200)}): export it again as JPEG "
            "and upload that.",
        ) from None


def _shrink(data: bytes, max_bytes: int, max_pixels: int = 50_000_000) -> bytes:
    """Downscale to a JPEG of at most ``max_bytes`` (Pillow, imported only when needed)."""
    return _resized(data, max_bytes, max_pixels)[0]


def _resized(
    data: bytes, max_bytes: int, max_pixels: int = 50_000_000,
    size: tuple[int, int] | None = None,
) -> tuple[bytes, tuple[int, int]]:
    """(JPEG of at most ``max_bytes``, its width and height), upright.

    ``size``: (width, height) in the stored image's frame, as ``fit_image`` gives it; the
    JPEG is that size unless the byte limit needs it smaller. None: at most SHRINK_MAX_SIDE
    pixels per side, smaller only for the byte limit.
    """
    Image = _pillow()
    with _decoding(Image):
        image = _decode_small(data, max(size) if size else SHRINK_MAX_SIDE, max_pixels)
        if size:
            width, height = size
            if (image.width > image.height) != (width > height) and width != height:
                width, height = height, width  # EXIF turned it upright: same tokens, turned
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.LANCZOS,
                                     reducing_gap=3.0)
        side = min(max(image.size), max(size) if size else SHRINK_MAX_SIDE)
        floor = min(64, side)  # an image smaller than 64 px is still encoded once
        while side >= floor:
            image.thumbnail((side, side), reducing_gap=2.0)  # never enlarges
            out = io.BytesIO()
            image.save(out, "JPEG", quality=85, optimize=True)
            if out.tell() <= max_bytes:
                return out.getvalue(), image.size
            side = int(side * min(0.9, math.sqrt(max_bytes / out.tell())))
    raise BadImage(
        "image_too_large",
        f"The image cannot be made small enough ({max_bytes} bytes) to send inline: upload a "
        "smaller photo, or raise MAX_PAYLOAD_BYTES (and the endpoint's PAYLOAD_LIMIT).",
    )
