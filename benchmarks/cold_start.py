"""Cold start: what importing the handler costs beyond boto3, and the size of its zip.

Each measurement is a fresh interpreter that imports boto3, then ``lambda_code``, timing both;
the ratio is taken within each run, so machine load that drifts between runs cancels out.
The handler is imported from the deployment zip extracted to a folder without bytecode
(``-B``), as on Lambda, where the package is read-only and ``lambda_code.py`` is compiled at
every cold start, with the ``photo_handler`` modules it imports at load; the ones only some
configurations use (presets, presets_schema, resize, asynchronous) are imported where first
needed, not here. boto3 comes precompiled in both cases. Interpreters importing
boto3 alone alternate with them, as a cross-check that importing the handler changes nothing
else.
"""

from __future__ import annotations

import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from .common import Row

TARGET_RATIO = 1.2
LAMBDA_ZIP_LIMIT = 50 * 1024 * 1024  # direct upload of a zipped deployment package

BOTO3_ONLY = (
    "import time; t0 = time.perf_counter(); import boto3; "
    "print(time.perf_counter() - t0)"
)
WITH_HANDLER = (
    "import sys, time; sys.path.insert(0, sys.argv[1]); t0 = time.perf_counter(); "
    "import boto3; t1 = time.perf_counter(); import lambda_code; t2 = time.perf_counter(); "
    "assert lambda_code.__file__.startswith(sys.argv[1]), lambda_code.__file__; "
    "print(t1 - t0, t2 - t1)"
)


def _time(code: str, folder: Path) -> list[float]:
    done = subprocess.run(
        [sys.executable, "-B", "-c", code, str(folder)], cwd=folder, capture_output=True,
        text=True, check=True, env={"PATH": "/usr/bin:/bin"},
    )
    return [float(v) for v in done.stdout.split()]


def _zip_sizes(data: bytes) -> tuple[int, int]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return len(data), sum(info.file_size for info in archive.infolist())


def _pillow_zip_size(build_zip: Any) -> int | None:
    """The data-uri transport's zip, with this machine's Pillow standing in for the Lambda's."""
    try:
        import PIL
    except ImportError:
        return None
    site = Path(PIL.__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as folder:
        for name in ("PIL", "pillow.libs"):
            if (site / name).is_dir():
                shutil.copytree(site / name, Path(folder) / name,
                                ignore=shutil.ignore_patterns("__pycache__"))
        return len(build_zip(Path(folder)))


def run(quick: bool) -> tuple[list[Row], dict[str, Any]]:
    from visual_tourism import packaging

    runs = 8 if quick else 20
    zip_bytes = packaging.build_zip("photo")
    boto3_only, boto3_first, handler_alone = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
            archive.extractall(folder)
        for _ in range(2):  # warm the file cache; not counted
            _time(BOTO3_ONLY, Path(folder))
            _time(WITH_HANDLER, Path(folder))
        for _ in range(runs):
            boto3_only.append(_time(BOTO3_ONLY, Path(folder))[0])
            boto3_part, alone = _time(WITH_HANDLER, Path(folder))
            boto3_first.append(boto3_part)
            handler_alone.append(alone)

    ratios = [(b + h) / b for b, h in zip(boto3_first, handler_alone, strict=True)]
    ratio = statistics.median(ratios)
    base, alone = statistics.median(boto3_first), statistics.median(handler_alone)
    separate = (statistics.median(boto3_only) + alone) / statistics.median(boto3_only)
    zipped, unzipped = _zip_sizes(zip_bytes)
    with_pillow = _pillow_zip_size(lambda vendor: packaging.build_zip("photo", vendor))
    rows = [
        Row("cold start", "import boto3 + lambda_code vs boto3 alone (median of runs)",
            f"<= {TARGET_RATIO}x",
            f"{ratio:.3f}x (lambda_code {alone * 1000:.1f} ms after boto3 {base * 1000:.0f} ms)",
            ratio <= TARGET_RATIO, ratio, "x",
            f"{runs} fresh interpreters; lambda_code compiled from source as on Lambda; "
            f"vs separate boto3-only interpreters: {separate:.3f}x"),
        Row("cold start", "Lambda zip (url transport)", "<= 50 MB (Lambda's zip upload limit)",
            f"{zipped:,} B ({unzipped:,} B unzipped)", zipped <= LAMBDA_ZIP_LIMIT, zipped, "B",
            "lambda_code.py and photo_handler/ (packaging.FUNCTION_CODE); boto3 is in the "
            "Lambda runtime"),
    ]
    if with_pillow is not None:
        rows.append(Row(
            "cold start", "Lambda zip with Pillow (data-uri, resizing profiles, web page on: "
            "the default), approximate",
            "<= 50 MB", f"{with_pillow / 1e6:.1f} MB", with_pillow <= LAMBDA_ZIP_LIMIT,
            with_pillow, "B",
            "this machine's Pillow wheel stands in for the manylinux one `up` downloads; "
            "Pillow is imported only when a photo must be shrunk",
        ))
    details = {
        "runs": runs, "ratios": [round(v, 4) for v in ratios],
        "boto3_only_ms": [round(v * 1000, 2) for v in boto3_only],
        "boto3_then_handler_ms": [round(v * 1000, 2) for v in boto3_first],
        "handler_alone_ms": [round(v * 1000, 2) for v in handler_alone],
        "zip_bytes": zipped, "unzipped_bytes": unzipped, "zip_with_pillow_bytes": with_pillow,
    }
    json.dumps(details)  # fail here, not when writing the report, if something is not JSON
    return rows, details
