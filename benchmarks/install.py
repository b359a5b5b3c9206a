"""How long the README's set-up takes on a fresh clone, and how big it is.

    python3 -m benchmarks.install            # `make demo`: install, then the demo itself
    python3 -m benchmarks.install --test     # also what `make test` adds on top (slow, ~2 GB)

Clones the repository (its committed HEAD) into a temp folder and runs the Makefile's own
targets there, with pip's cache turned off so every package is downloaded as on a first-time
user's machine. Needs network access to PyPI, so it is not part of ``python -m benchmarks``
(which runs offline). Standard library only: runs with any Python 3.11+, no venv needed.
The temp folder is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE = (291.0, 1.9 * 1024)  # `make demo` before the demo got its own install: s, MB


def _size_mb(folder: Path) -> float:
    total = 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total / 1024 / 1024


def _timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.monotonic()
    run = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if run.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({run.returncode}):\n{run.stdout}\n{run.stderr}")
    return seconds, run.stdout


def _packages(venv: Path) -> int:
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
                         capture_output=True, text=True, check=True).stdout
    return len(out.splitlines())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.install",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--test", action="store_true",
                        help="also install what `make test` adds (the dev extra), and size it")
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "PIP_", "VT_", "AWS_"))}
    env["PIP_NO_CACHE_DIR"] = "1"  # download everything, as on a fresh machine
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="visual-tourism-install-") as folder:
        clone = Path(folder) / "visual-tourism"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        venv = clone / ".venv"
        install_s, _ = _timed(["make", ".venv/demo-installed"], clone, env)
        size = _size_mb(venv)
        rows.append(("make demo: install (venv, pip, the project with the local extra)",
                     f"{install_s:.0f} s, {size:.0f} MB, {_packages(venv)} packages"))
        demo_s, out = _timed(["make", "demo"], clone, env)
        answered = next((line.strip() for line in out.splitlines()
                         if line.startswith("answered by:")), "no answer line")
        rows.append(("make demo: the demo once installed", f"{demo_s:.0f} s ({answered})"))
        rows.append(("make demo: total on a fresh clone",
                     f"{install_s + demo_s:.0f} s, {size:.0f} MB "
                     f"(before: {BEFORE[0]:.0f} s, {BEFORE[1]:,.0f} MB)"))
        if args.test:
            test_s, _ = _timed(["make", ".venv/installed"], clone, env)
            full = _size_mb(venv)
            rows.append(("make test: install added on top of the demo's",
                         f"{test_s:.0f} s, venv then {full:,.0f} MB, "
                         f"{_packages(venv)} packages"))
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}, "
          f"Python {platform.python_version()}; pip cache off (every package downloaded)\n")
    print("| Step | Measured |\n|---|---|")
    for step, measured in rows:
        print(f"| {step} | {measured} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
