"""A photo's format and size from its first bytes (magic numbers and headers, nothing
decoded), and the size limits the model takes: standard library only, so the checks cost no
import and no download of the whole photo."""

from __future__ import annotations

import struct

from .errors import BadImage
from .settings import Settings

ACCEPTED = "JPEG, PNG, GIF, WebP or BMP"


def _truncated() -> BadImage:
    return BadImage(
        "truncated_image",
        "The file is cut short (its image header is incomplete), as after an interrupted copy: "
        "upload the complete photo again.",
    )


def _corrupt(fmt: str, detail: str) -> BadImage:
    return BadImage(
        "corrupt_image",
        f"The {fmt} header is damaged ({detail}), so the image cannot be decoded: open the photo "
        "in a photo app, export it as JPEG and upload that.",
    )


def _unpack(fmt: str, data: bytes, offset: int) -> tuple[int, ...]:
    if len(data) < offset + struct.calcsize(fmt):
        raise _truncated()
    return struct.unpack_from(fmt, data, offset)


# Start-of-frame markers carry the size; C4 (DHT), C8 (reserved) and CC (DAC) do not.
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}  # markers without a length field


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    while True:
        if i >= len(data):
            raise _truncated()
        if data[i] != 0xFF:
            raise _corrupt("JPEG", f"no marker at byte {i}")
        while i < len(data) and data[i] == 0xFF:  # 0xFF fill bytes may precede a marker
            i += 1
        if i >= len(data):
            raise _truncated()
        marker = data[i]
        i += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):
            raise _corrupt("JPEG", "image data before the frame header")
        (length,) = _unpack(">H", data, i)
        if marker in _JPEG_SOF:
            height, width = _unpack(">HH", data, i + 3)
            return width, height
        if length < 2:
            raise _corrupt("JPEG", f"segment length {length}")
        i += length


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: key frame start code, then 14-bit sizes
        _unpack("<HH", data, 26)
        if data[23:26] != b"\x9d\x01\x2a":
            raise _corrupt("WebP", "no VP8 key frame")
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: signature byte, then 14-bit (size - 1) fields
        (signature, bits) = _unpack("<BI", data, 20)
        if signature != 0x2F:
            raise _corrupt("WebP", "bad VP8L signature")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit (canvas size - 1) fields
        _unpack("<3s3s", data, 24)
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if len(data) < 16:
        raise _truncated()
    raise _corrupt("WebP", f"unknown chunk {chunk!r}")


_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs",
                b"mif1", b"msf1"}


def _not_accepted(data: bytes) -> BadImage:
    """Name what the file is when it can be told, so the message says what to do."""
    if data[4:8] == b"ftyp":  # ISO media: HEIC/AVIF photos, MP4/MOV videos
        size = struct.unpack_from(">I", data, 0)[0]
        brands = {data[i:i + 4] for i in range(8, min(len(data), max(size, 16)) - 3, 4)}
        if brands & {b"avif", b"avis"}:
            return BadImage(
                "unsupported_format",
                "AVIF images are not supported by the model server: convert the photo to JPEG "
                "and upload again.",
            )
        if brands & _HEIF_BRANDS:
            return BadImage(
                "unsupported_format",
                "HEIC photos are not supported by the model server: convert to JPEG (on iPhone: "
                "Settings > Camera > Formats > Most Compatible) and upload again.",
            )
        return BadImage(
            "not_an_image", f"This file is a video, not a photo: upload a {ACCEPTED} photo."
        )
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return BadImage(
            "unsupported_format",
            "TIFF images (and camera RAW files, which are built on TIFF) are not supported by the "
            "model server: export the photo as JPEG and upload again.",
        )
    if data[:2] == b"\xff\x0a" or data[4:12] == b"JXL \r\n\x87\n":
        return BadImage(
            "unsupported_format",
            "JPEG XL images are not supported by the model server: export the photo as JPEG "
            "and upload again.",
        )
    sample = data[:1024]
    if b"\x00" not in sample and sample.decode("utf-8", "replace").count("\ufffd") <= 1:
        return BadImage(
            "not_an_image",
            f"This file is text, not a photo, whatever its name says: upload a {ACCEPTED} photo.",
        )
    return BadImage(
        "not_an_image",
        f"This file is not an image the model server can read: upload a {ACCEPTED} photo.",
    )


def sniff_image(data: bytes) -> tuple[str, int, int]:
    """Return ``(format, width, height)`` from the first bytes of a file, or raise BadImage.

    Formats are told by their magic bytes and sizes read from their headers; nothing is
    decoded, so a few hundred bytes (a JPEG's EXIF aside) are enough.
    """
    if not data:
        raise BadImage("empty_file", "The file is empty (0 bytes): upload the photo again.")
    if data.startswith(b"\xff\xd8\xff"):
        fmt, (width, height) = "jpeg", _jpeg_size(data)
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) >= 16 and data[12:16] != b"IHDR":
            raise _corrupt("PNG", "first chunk is not IHDR")
        fmt, (width, height) = "png", _unpack(">II", data, 16)
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        fmt, (width, height) = "gif", _unpack("<HH", data, 6)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        fmt, (width, height) = "webp", _webp_size(data)
    elif data[:2] == b"BM" and len(data) >= 18 and _unpack("<I", data, 14)[0] in _BMP_HEADER_SIZES:
        if _unpack("<I", data, 14)[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
            width, height = _unpack("<HH", data, 18)
        else:  # a negative height means rows stored top-down
            width, height = _unpack("<ii", data, 18)
            height = abs(height)
        fmt = "bmp"
    else:
        raise _not_accepted(data)
    if width <= 0 or height <= 0:
        raise _corrupt(fmt.upper(), f"size {width}x{height}")
    return fmt, width, height


def check_limits(width: int, height: int, size: int, settings: Settings) -> None:
    """Raise BadImage when the photo is too large or too small for the model."""
    if size > settings.max_image_bytes:
        raise BadImage(
            "image_too_large",
            f"The file is {size / 1e6:.1f} MB, over the {settings.max_image_bytes / 1e6:g} MB "
            "limit: export the photo at a smaller size (e.g. 4000 pixels wide) and upload again.",
        )
    if width * height > settings.max_image_pixels:
        raise BadImage(
            "image_too_large",
            f"The image is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels), over "
            f"the {settings.max_image_pixels / 1e6:g} megapixel limit: resize it (e.g. 4000 "
            "pixels wide) and upload again.",
        )
    if min(width, height) < settings.min_image_side:
        raise BadImage(
            "image_too_small",
            f"The image is only {width}x{height} pixels; at least {settings.min_image_side} "
            "pixels on each side are needed to see anything: upload the full-size photo.",
        )
