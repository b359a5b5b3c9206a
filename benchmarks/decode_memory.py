"""Peak memory of the data-uri transport shrinking a max-size photo, per accepted format.

The Lambda has 512 MB. Each format's photo (as large as the handler accepts: 7000x7000 =
49 MP under the 50 MP limit; BMP, which is not compressed, as large as the 20 MB file limit
allows) is written to a file, then a fresh Python process imports the handler, reads the
file and runs ``photo_handler.resize._shrink`` on it, as the handler does for an upload too large to
send inline. The figure is that process's peak resident set (``resource.getrusage``
``ru_maxrss``), the interpreter and Pillow included; the baseline is the same process just
before shrinking.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .common import ROOT, Row

FUNCTION_MB = 512
TARGET_MB = 300  # "well under" the function's memory
SIDE = 7000  # 49 MP: the largest square under MAX_IMAGE_PIXELS (50 MP)
BMP_SIDE = 2500  # 24-bit BMP: 18.75 MB, under MAX_IMAGE_BYTES (20 MB)
# WebP is shrunk up to resize.WEBP_DECODE_MAX_PIXELS (4096x3072); a 7000x7000 WebP too
# large to send as it is gets an error record without being decoded (measured too).
SIZES = {"JPEG": (SIDE, SIDE), "PNG": (SIDE, SIDE), "GIF": (SIDE, SIDE), "WEBP": (4096, 3072),
         "WEBP-refused": (SIDE, SIDE), "BMP": (BMP_SIDE, BMP_SIDE)}
BUDGET = 1_400_000  # bytes for the photo inside a 1.9 MB payload, as the handler computes
FORMATS = tuple(SIZES)

# Linux keeps a process's ru_maxrss across execve, so a child started by a large parent (the
# test run, which made the photo) starts with the parent's figure. The child therefore forks
# once more while still small: the grandchild's ru_maxrss counts only its own memory.
_CHILD = """
import json, os, resource, sys
pid = os.fork()
if pid == 0:
    sys.path.insert(0, sys.argv[2])
    from photo_handler import resize
    from photo_handler.errors import BadImage
    from PIL import Image  # imported before the baseline
    data = open(sys.argv[1], "rb").read()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        out, refused = resize._shrink(data, int(sys.argv[3]), 50_000_000), None
    except BadImage as exc:
        out, refused = b"", exc.code
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"baseline_kb": before, "peak_kb": peak, "out_bytes": len(out),
                      "refused": refused}), flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def max_size_photo(fmt: str) -> bytes:
    """A max-size photo in ``fmt``: a smooth pattern (it compresses under the 20 MB limit)."""
    from PIL import Image

    size = SIZES[fmt]
    fmt = fmt.split("-")[0]
    channels = [Image.linear_gradient("L").resize(size).rotate(a) for a in (0, 90, 180)]
    image = Image.merge("RGB", channels)
    del channels
    if fmt == "GIF":
        image = image.convert("P")
    out = io.BytesIO()
    options: dict[str, Any] = {"quality": 80} if fmt in ("JPEG", "WEBP") else {}
    image.save(out, fmt, **options)
    return out.getvalue()


def peak_memory(path: Path, budget: int = BUDGET) -> dict[str, float]:
    """Peak and baseline RSS (MB) of a fresh process shrinking the photo in ``path``."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(ROOT), str(budget)],
        capture_output=True, text=True, check=True, timeout=300,
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return {"peak_mb": found["peak_kb"] / 1024, "baseline_mb": found["baseline_kb"] / 1024,
            "out_bytes": found["out_bytes"], "refused": found["refused"]}


def run(quick: bool = False) -> tuple[list[Row], dict[str, Any]]:
    """Measure every format; print one line each; rows for the benchmark table."""
    rows: list[Row] = []
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="decode-memory-") as folder:
        for fmt in FORMATS:
            path = Path(folder) / "photo"
            path.write_bytes(max_size_photo(fmt))
            (width, height), size = SIZES[fmt], path.stat().st_size
            # A WebP this large would fit the payload as it is: ask for a small one to force
            # the shrink (or the refusal) the handler does for a larger file.
            found = peak_memory(path, min(BUDGET, size // 2))
            found.update(width=width, height=height, file_bytes=size)
            details[fmt.lower()] = found
            outcome = f"refused ({found['refused']})" if found["refused"] else "shrunk"
            print(f"{fmt:12} {width}x{height} ({size / 1e6:.1f} MB file, {outcome}): peak RSS "
                  f"{found['peak_mb']:.0f} MB (baseline {found['baseline_mb']:.0f} MB)",
                  flush=True)
            rows.append(Row(
                "decode-memory", f"peak RSS, {width}x{height} {fmt} ({outcome})",
                f"< {TARGET_MB} MB", f"{found['peak_mb']:.0f} MB", found["peak_mb"] < TARGET_MB,
                value=round(found["peak_mb"], 1), unit="MB",
                note=f"function memory {FUNCTION_MB} MB" if fmt == FORMATS[0] else "",
            ))
            path.unlink()
    return rows, details


if __name__ == "__main__":
    run()
