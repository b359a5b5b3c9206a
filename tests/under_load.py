"""Run the whole suite several times in a row while other processes keep every core busy.

`make test-under-load` runs this: a suite that passes only on an idle machine is a defect
(issue 21). The busy loops are plain Python processes at normal priority, one per core, so
no system package is needed; they stop with this script, whatever happens.

    python tests/under_load.py [--runs 3] [--hogs N] [pytest arguments...]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _spin() -> None:
    while True:  # pure CPU, no memory growth
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="suite runs in a row (default 3)")
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2,
                        help="busy processes beside the suite (default: one per core)")
    args, pytest_args = parser.parse_known_args(argv)

    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.hogs)]
    for hog in hogs:
        hog.start()
    print(f"under load: {args.hogs} busy process(es) on {os.cpu_count()} core(s); "
          f"{args.runs} run(s) of pytest {' '.join(pytest_args)}".rstrip(), flush=True)
    results = []
    try:
        for number in range(1, args.runs + 1):
            started = time.monotonic()
            code = subprocess.call([sys.executable, "-m", "pytest", "-q", *pytest_args],
                                   cwd=ROOT)
            took = time.monotonic() - started
            results.append((number, code, took))
            print(f"under load: run {number}/{args.runs} exited {code} after {took:.0f} s",
                  flush=True)
            if code != 0:
                break
    finally:
        for hog in hogs:
            hog.terminate()
        for hog in hogs:
            hog.join(5)
    passed = sum(1 for _, code, _ in results if code == 0)
    print(f"under load: {passed} of {args.runs} run(s) passed; times: "
          + ", ".join(f"{took:.0f} s" for _, _, took in results))
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
