"""The house: docs/layout.md matches the tree, every link in the README and docs/ resolves,
modules do not import each other in a cycle, and a test run leaves nothing in the temp folder."""

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


# -- the layout page and the links between the pages -------------------------------------------

DOCS = ROOT / "docs"
LAYOUT = DOCS / "layout.md"
# The functions' code: every file in these folders is named in the layout (what the zips hold).
FUNCTION_FOLDERS = ("photo_handler", "web_function")


def _layout() -> list[tuple[Path, str]]:
    """(path, line) for every name in the layout page's block."""
    text = LAYOUT.read_text()
    block = re.search(r"^```\n(.*?)^```", text, re.S | re.M)
    assert block, "docs/layout.md has no code block"
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


def test_every_name_in_the_layout_page_exists_where_it_is_shown():
    missing = [f"{path.relative_to(ROOT)}  (line: {line.strip()!r})"
               for path, line in _layout() if not path.exists()]
    assert not missing, "docs/layout.md names what is not there:\n" + "\n".join(missing)


def test_every_module_and_every_function_file_is_in_the_layout_page():
    listed = {path.resolve() for path, _ in _layout()}
    modules = [p for p in PACKAGE.iterdir()
               if (p.suffix == ".py" and p.name != "__init__.py")
               or (p.is_dir() and (p / "__init__.py").exists())]
    modules += list(ROOT.glob("*.py"))  # top-level modules: the photo function's handler
    for folder in FUNCTION_FOLDERS:  # each file a function's zip holds
        modules += [p for p in (ROOT / folder).iterdir()
                    if p.is_file() and p.name != "__init__.py" and p.suffix != ".pyc"]
    absent = sorted(str(p.relative_to(ROOT)) for p in modules if p.resolve() not in listed)
    assert not absent, f"docs/layout.md does not list: {absent}"


def _pages() -> list[Path]:
    """The Markdown a reader follows from the README."""
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md")), ROOT / "infra" / "README.md",
            ROOT / "notebooks" / "README.md"]


def _unfenced(text: str) -> str:
    """The text without fenced code blocks (a `#` there starts no heading)."""
    return re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)


def _prose(text: str) -> str:
    """The text without code blocks and inline code, where a link is not a link."""
    return re.sub(r"`[^`\n]*`", "", _unfenced(text))


def _links(page: Path) -> list[str]:
    """The target of every Markdown link and image on ``page``."""
    return re.findall(r"!?\[[^\]]*\]\(<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\)",
                      _prose(page.read_text()))


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings (lower case, punctuation dropped, spaces
    to hyphens, a repeated one numbered)."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", _unfenced(page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_every_docs_page_linked_from_the_readme_exists_and_every_page_is_linked():
    linked = {(ROOT / link.split("#")[0]).resolve() for link in _links(ROOT / "README.md")
              if link.startswith("docs/") and link.split("#")[0].endswith(".md")}
    assert linked, "README.md links no page under docs/"
    missing = sorted(str(p.relative_to(ROOT)) for p in linked if not p.exists())
    assert not missing, f"README.md links docs pages that do not exist: {missing}"
    unlinked = sorted(p.name for p in DOCS.glob("*.md") if p.resolve() not in linked)
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_every_relative_link_in_the_readme_and_docs_resolves():
    broken = []
    for page in _pages():
        for link in _links(page):
            if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto:: not ours to check
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: {link}"
            if not target.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
                broken.append(f"{where} (no heading with that anchor)")
    assert not broken, "links that lead nowhere:\n" + "\n".join(broken)


# -- no import circles, and the command line on top ---------------------------------------------

def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the project by its dotted name: the modules at the root (the handler)
    and every module of each package at the root (a folder with an ``__init__.py``: the
    library, the functions' folders, the benchmarks). Found, not listed, so a new module or
    package is checked the day it appears."""
    found = {path.stem: path for path in root.glob("*.py")}
    for package in sorted(p for p in root.iterdir() if (p / "__init__.py").is_file()):
        for path in package.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Which of ``modules`` each one imports, anywhere in its file: at the top, inside
    functions and classes, relative or absolute. ``from package import name`` counts as an
    import of the module ``package.name`` when there is one, else of ``package`` itself."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([node.module] if node.module else [])])
                for alias in node.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules
                              else base)
        graph[name] = {module for module in found if module in modules and module != name}
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each group of modules that import each other, as the path
    ``[a, b, ..., a]``; empty when the imports point one way."""
    circles: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        for imported in sorted(graph[module]):
            if imported in path:
                circle = path[path.index(imported):] + [imported]
                if not set(circle) <= {m for c in circles for m in c}:
                    circles.append(circle)
            elif imported not in done:
                visit(imported, [*path, imported])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    return circles


def test_no_module_of_the_project_imports_itself_back():
    """Through any number of other modules, at import time or inside a function: a circle
    makes the import order matter and hides which module is the lower layer."""
    modules = project_modules()
    assert {"lambda_code", "visual_tourism.where", "visual_tourism.cli"} <= set(modules)
    circles = import_circles(import_graph(modules))
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_the_circle_check_finds_a_circle_closed_inside_a_function(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    for init in (package / "__init__.py", package / "sub" / "__init__.py"):
        init.write_text("")
    (package / "a.py").write_text("from .sub import b\n")
    (package / "sub" / "b.py").write_text("import json\n\n\ndef late():\n"
                                          "    from ..c import value\n    return value\n")
    (package / "c.py").write_text("from pkg import a\n\nvalue = 1\n")
    (package / "d.py").write_text("from . import a, c  # imports into a circle, not part of it\n")
    (tmp_path / "top.py").write_text("import pkg.d\n")
    modules = project_modules(tmp_path)
    assert set(modules) == {"top", "pkg", "pkg.sub", "pkg.a", "pkg.sub.b", "pkg.c", "pkg.d"}
    assert import_circles(import_graph(modules)) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    (package / "c.py").write_text("value = 1\n")  # the circle broken: the check passes
    assert import_circles(import_graph(project_modules(tmp_path))) == []


def test_no_module_imports_the_command_line():
    """The command line sits on top: nothing outside visual_tourism/cli/ imports it, and each
    command group's module takes shared pieces from cli/common.py, not from another group."""
    def in_cli(module: str) -> bool:
        return module == "visual_tourism.cli" or module.startswith("visual_tourism.cli.")

    graph = import_graph(project_modules())
    outside = sorted(f"{m} -> {i}" for m, imported in graph.items() for i in imported
                     if not in_cli(m) and in_cli(i))
    assert not outside, outside
    top = {"visual_tourism.cli", "visual_tourism.cli.__main__"}
    sideways = sorted(f"{m} -> {i}" for m, imported in graph.items() for i in imported
                      if in_cli(m) and m not in top and in_cli(i)
                      and i != "visual_tourism.cli.common")
    assert not sideways, sideways


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
