"""The house: the README's layout matches the tree, modules do not import each other in a
cycle, and a test run leaves nothing in the temp folder."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "visual_tourism"


def _layout() -> list[tuple[Path, str]]:
    """(path, line) for every name in the README's layout block."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Layout\n+```\n(.*?)```", text, re.S)
    assert block, "README.md has no ## Layout code block"
    found: list[tuple[Path, str]] = []
    parent = ROOT
    for line in block.group(1).splitlines():
        if not line.strip() or line.startswith("   "):  # blank, or a description's next line
            continue
        indented = line.startswith("  ")
        names = re.split(r"\s{2,}", line.strip())[0].split()
        for name in names:
            base = parent if indented else ROOT
            found.append((base / name, line))
        if not indented and names[-1].endswith("/"):
            parent = ROOT / names[-1]
    return found


def test_every_name_in_the_readme_layout_exists_where_it_is_shown():
    missing = [f"{path.relative_to(ROOT)}  (line: {line.strip()!r})"
               for path, line in _layout() if not path.exists()]
    assert not missing, "README layout names what is not there:\n" + "\n".join(missing)


def test_every_module_of_the_package_is_in_the_readme_layout():
    listed = {path.resolve() for path, _ in _layout()}
    modules = [p for p in PACKAGE.iterdir()
               if (p.suffix == ".py" and p.name != "__init__.py")
               or (p.is_dir() and (p / "__init__.py").exists())]
    modules += list(ROOT.glob("*.py"))  # top-level modules: the handler and what it zips
    absent = sorted(p.name for p in modules if p.resolve() not in listed)
    assert not absent, f"README layout block does not list: {absent}"


def _imports(path: Path) -> set[str]:
    """The package modules a module imports (relative or absolute), at any depth."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in node.names)
            elif node.module and node.module.startswith("visual_tourism"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("visual_tourism"))
    return found


def test_no_module_imports_the_command_line():
    """cli.py sits on top: modules that add subcommands take shared pieces from cli_common."""
    offenders = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
                 if p.name != "cli.py" and "visual_tourism.cli" in _imports(p)]
    assert not offenders, offenders


# -- nothing left in the temp folder (the check lives in tests/conftest.py) ----------------------

LEAKY = '''
import tempfile

def test_leaks():
    tempfile.mkdtemp(prefix="left-behind-")

def test_cleans_up():
    with tempfile.TemporaryDirectory(prefix="cleaned-"):
        pass
'''


def _run_suite(folder: Path, selection: str, *more: str) -> subprocess.CompletedProcess[str]:
    # The suite's conftest and the plugin it names (pytest_plugins), exactly as the run uses them.
    for name in ("conftest.py", "browser.py"):
        shutil.copy(ROOT / "tests" / name, folder / name)
    (folder / "test_sample.py").write_text(LEAKY)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", selection,
         *more, str(folder)], capture_output=True, text=True, cwd=folder, timeout=120,
    )


# Also across pytest-xdist's workers (as the suite runs): a worker's leak fails the whole run.
@pytest.mark.parametrize("workers", [[], ["-n", "1"]], ids=["one process", "xdist worker"])
def test_a_run_that_leaves_a_temp_folder_fails_and_names_it(tmp_path, workers):
    run = _run_suite(tmp_path, "leaks", *workers)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "left in the temp folder" in run.stdout
    assert re.search(r"left-behind-\w+", run.stdout)


@pytest.mark.parametrize("workers", [[], ["-n", "1"]], ids=["one process", "xdist worker"])
def test_a_run_that_cleans_up_passes(tmp_path, workers):
    run = _run_suite(tmp_path, "cleans_up", *workers)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "left in the temp folder" not in run.stdout
