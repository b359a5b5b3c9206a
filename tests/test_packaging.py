"""The two Lambda zips (visual_tourism/packaging.py): what each holds, listed once in
``FUNCTION_CODE``; the same bytes every time; no bytecode caches; vendored packages at the root;
and the web function's zip runs on its own."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from visual_tourism import lambda_fn, packaging, web

ROOT = Path(__file__).resolve().parent.parent


def names(zip_bytes: bytes) -> list[str]:
    return zipfile.ZipFile(io.BytesIO(zip_bytes)).namelist()


def listed(function: str) -> list[str]:
    """What FUNCTION_CODE names for ``function``, walked here without the module's help."""
    found = []
    for entry in packaging.FUNCTION_CODE[function]:
        path = ROOT / entry
        if path.is_file():
            found.append(entry)
            continue
        for folder, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            found += [(Path(folder) / f).relative_to(ROOT).as_posix() for f in files
                      if not f.endswith(".pyc")]
    return sorted(found)


def test_the_function_code_is_the_handler_beside_its_folder_and_the_web_folder():
    assert packaging.FUNCTION_CODE == {"photo": ("lambda_code.py", "photo_handler"),
                                       "web": ("web_function",)}
    assert packaging.ROOT == ROOT


@pytest.mark.parametrize("function", sorted(packaging.FUNCTION_CODE))
def test_each_zip_holds_exactly_what_function_code_lists_with_the_files_bytes(function):
    data = packaging.build_zip(function)
    packaging._built.clear()  # built again, not this process's copy
    assert data == packaging.build_zip(function)  # deterministic: same code, same bytes
    assert names(data) == listed(function) == [n for n, _ in packaging.code_files(function)]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.external_attr == 0o100644 << 16
            assert info.compress_type == zipfile.ZIP_DEFLATED
            assert archive.read(info) == (ROOT / info.filename).read_bytes()


def test_the_web_zip_is_its_folder_and_each_handler_is_in_its_zip():
    assert names(packaging.build_zip("web")) == [
        "web_function/__init__.py", "web_function/app.py", "web_function/page.html"]
    for function, handler in (("photo", lambda_fn.HANDLER), ("web", web.HANDLER)):
        module = handler.rpartition(".")[0]
        assert f"{module.replace('.', '/')}.py" in names(packaging.build_zip(function))
    photo = names(packaging.build_zip("photo"))
    assert photo[0] == "lambda_code.py"
    assert all(n.startswith("photo_handler/") for n in photo[1:]) and len(photo) > 1


def test_bytecode_caches_are_left_out_and_vendored_packages_sit_at_the_root(
        tmp_path, monkeypatch):
    code = tmp_path / "project"
    (code / "fn" / "__pycache__").mkdir(parents=True)
    (code / "fn" / "sub").mkdir()
    (code / "handler.py").write_text("h = 1\n")
    (code / "fn" / "a.py").write_text("a = 1\n")
    (code / "fn" / "sub" / "b.py").write_text("b = 1\n")
    (code / "fn" / "__pycache__" / "a.cpython-312.pyc").write_bytes(b"cache")
    (code / "fn" / "stray.pyc").write_bytes(b"cache")
    vendor = tmp_path / "vendor"
    (vendor / "PIL" / "__pycache__").mkdir(parents=True)
    (vendor / "PIL" / "__init__.py").write_text("pil = 1\n")
    (vendor / "PIL" / "__pycache__" / "__init__.cpython-312.pyc").write_bytes(b"cache")
    monkeypatch.setattr(packaging, "ROOT", code)
    monkeypatch.setattr(packaging, "FUNCTION_CODE", {"f": ("handler.py", "fn")})

    assert packaging.code_files("f") == [("fn/a.py", code / "fn" / "a.py"),
                                         ("fn/sub/b.py", code / "fn" / "sub" / "b.py"),
                                         ("handler.py", code / "handler.py")]
    data = packaging.build_zip("f", vendor, extra={"extra.txt": b"x"})
    assert names(data) == ["PIL/__init__.py", "extra.txt", "fn/a.py", "fn/sub/b.py",
                           "handler.py"]
    packaging._built.clear()
    assert data == packaging.build_zip("f", vendor, extra={"extra.txt": b"x"})
    assert data != packaging.build_zip("f", vendor)
    # A zip built once in this process is built again when a file's bytes change.
    (code / "fn" / "a.py").write_text("a = 2\n")
    changed = packaging.build_zip("f", vendor, extra={"extra.txt": b"x"})
    assert zipfile.ZipFile(io.BytesIO(changed)).read("fn/a.py") == b"a = 2\n"
    # A later layer replaces an entry of the same name: vendor, then the code, then extra.
    replaced = packaging.build_zip("f", extra={"handler.py": b"h = 2\n"})
    assert zipfile.ZipFile(io.BytesIO(replaced)).read("handler.py") == b"h = 2\n"


def test_an_unknown_function_or_a_missing_entry_says_so(monkeypatch, tmp_path):
    with pytest.raises(KeyError, match="photo, web"):
        packaging.code_files("nope")
    monkeypatch.setattr(packaging, "ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match="FUNCTION_CODE"):
        packaging.code_files("web")


def test_the_web_zip_runs_alone_and_imports_nothing_of_the_project(tmp_path):
    """Lambda unpacks the zip and imports the handler string; only the standard library and
    boto3 are there beside it."""
    with zipfile.ZipFile(io.BytesIO(packaging.build_zip("web"))) as archive:
        archive.extractall(tmp_path)
    module, _, function = web.HANDLER.rpartition(".")
    script = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        f"m = importlib.import_module({module!r})\n"
        f"assert m.__file__.startswith({str(tmp_path)!r}), m.__file__\n"
        f"assert callable(getattr(m, {function!r})) and m.PAGE.is_file()\n"
        "ours = ('visual_tourism', 'photo_handler', 'lambda_code')\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ours))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
