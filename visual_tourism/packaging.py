"""The zips of the two Lambda functions: what each holds, built the same way every time.

``FUNCTION_CODE`` is the one list of what goes into each zip, relative to the project root:
the photo function's handler with its helper folder beside it, and the web function's folder.
A folder is zipped whole, so a module added to it ships without touching this file.

``build_zip`` is deterministic (fixed dates and modes, sorted entries): the same code gives the
same bytes, so Lambda's CodeSha256 tells whether a deploy has anything to upload. Packages the
runtime lacks (Pillow, for resizing) are vendored into a folder whose contents sit at the zip's
root, where the handler imports them like any installed package.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DeployError

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)

# The zips are built from the source tree (an editable install), where the function code sits
# beside this package.
ROOT = Path(__file__).resolve().parent.parent

# Each function's code: a file, or a folder zipped whole with its path kept.
FUNCTION_CODE: dict[str, tuple[str, ...]] = {
    "photo": ("lambda_code.py", "photo_handler"),
    "web": ("web_function",),
}

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
# Zips already built in this process, by the digest of what they hold: the same inputs give
# the same bytes, and compressing the vendored Pillow is most of the work (local mode and
# `up` then `web up` build the same zip more than once).
_built: dict[str, bytes] = {}
_FILE_MODE = 0o100644 << 16  # a regular file, rw-r--r--


def _skipped(relative: Path) -> bool:
    """Bytecode caches: written by whichever Python imported the code, so never the same twice."""
    return "__pycache__" in relative.parts or relative.suffix == ".pyc"


def _walk(folder: Path) -> list[tuple[str, Path]]:
    """(path relative to ``folder``, path) for each file under it, caches left out."""
    return [(path.relative_to(folder).as_posix(), path) for path in folder.rglob("*")
            if path.is_file() and not _skipped(path.relative_to(folder))]


def code_files(function: str) -> list[tuple[str, Path]]:
    """(arcname, path) of every file of ``function``'s code ("photo" or "web"), by arcname."""
    if function not in FUNCTION_CODE:
        raise KeyError(f"No Lambda function {function!r}: one of {', '.join(FUNCTION_CODE)}")
    files: list[tuple[str, Path]] = []
    for entry in FUNCTION_CODE[function]:
        path = ROOT / entry
        if path.is_dir():
            files += [(f"{entry}/{name}", file) for name, file in _walk(path)]
        elif path.is_file():
            files.append((entry, path))
        else:
            raise FileNotFoundError(f"{path}: listed in packaging.FUNCTION_CODE[{function!r}]")
    return sorted(files)


def build_zip(function: str, vendor: Path | None = None,
              extra: Mapping[str, bytes] | None = None) -> bytes:
    """``function``'s zip: the contents of ``vendor`` at its root, then the function's code,
    then ``extra`` (arcname -> bytes); a later layer replaces an entry of the same name."""
    files: dict[str, bytes] = {}
    if vendor:
        files.update((name, path.read_bytes()) for name, path in _walk(vendor))
    files.update((name, path.read_bytes()) for name, path in code_files(function))
    files.update(extra or {})
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{len(files[name])}\0".encode())
        digest.update(files[name])
    key = digest.hexdigest()
    if key not in _built:
        if len(_built) >= 4:
            _built.clear()
        _built[key] = _deflate(files)
    return _built[key]


def _deflate(files: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = _FILE_MODE
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name])
    return buffer.getvalue()


def code_sha256(zip_bytes: bytes) -> str:
    """The form Lambda reports as CodeSha256: base64 of the SHA-256 digest."""
    return base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()


def vendor_dir(cfg: Config, cache: Path | None = None, local: bool = False) -> Path | None:
    """What the photo function's zip vendors for this configuration: Pillow when the handler
    may resize images (``Config.needs_pillow``), else nothing.

    ``local``: for local mode's Lambda service, which runs the handler with this interpreter
    (and its Pillow). A wheel for the runtime's Python imports there only when this
    interpreter is that version; otherwise it would shadow the working one, so nothing."""
    if not cfg.needs_pillow:
        return None
    if local and cfg.lambda_runtime != f"python{sys.version_info[0]}.{sys.version_info[1]}":
        return None
    return vendor_pillow(cfg, cache)


def vendor_pillow(cfg: Config, cache: Path | None = None) -> Path:
    """Pillow for the Lambda's platform (manylinux x86_64, its Python), cached by version.

    The handler downscales images with it: for the data-uri transport's payload limit, for
    a profile whose container counts image tokens by size, and for the small copies of the
    web page's photos that its gallery shows (``Config.needs_pillow``).
    """
    version = cfg.lambda_runtime.removeprefix("python")
    target = (cache or ROOT / "build") / f"pillow-py{version}"
    if (target / "PIL").is_dir():
        return target
    cmd = [
        sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target),
        "--platform", "manylinux2014_x86_64", "--implementation", "cp",
        "--python-version", version, "--only-binary=:all:", "pillow",
    ]
    log.info("Vendoring Pillow for %s into %s", cfg.lambda_runtime, target)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DeployError(
            "Could not download Pillow for the Lambda (needed to resize images: "
            f"image_transport={cfg.effective_image_transport}, profile {cfg.model_profile}, "
            f"web_api={cfg.web_api}): "
            f"{result.stderr.strip()[-400:]}. Check the network."
        )
    return target
