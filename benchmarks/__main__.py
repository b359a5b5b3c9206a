"""``python -m benchmarks [--quick] [--only NAME ...]``: run, print the table, write the JSON.

Everything runs on this machine against loopback stand-ins (moto, the local Lambda service,
the local model server): no AWS account, no network. Compare ratios within one run; absolute
times depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from . import (
    async_cost,
    burst,
    cold_start,
    decode_memory,
    handler_overhead,
    local_mode,
    managed,
    payload,
    web_page,
)
from .common import ROOT, Row, machine

Benchmark = Callable[[bool], tuple[list[Row], dict[str, Any]]]
BENCHMARKS: dict[str, Benchmark] = {
    "cold-start": cold_start.run,  # first: subprocess timings on a quiet machine
    "handler": handler_overhead.run,
    "payload": payload.run,
    "decode-memory": decode_memory.run,
    "local": local_mode.run,
    "burst": burst.run,
    "async-cost": async_cost.run,
    "web": web_page.run,
    "managed": managed.run,
}
DEFAULT_OUT = ROOT / "benchmarks" / "out" / "results.json"


def _isolate() -> None:
    """Only loopback stand-ins: drop any AWS or Visual Tourism settings of this shell."""
    for name in [n for n in os.environ if n.startswith(("AWS_", "VT_"))]:
        del os.environ[name]
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    os.environ["HF_HUB_OFFLINE"] = "1"  # the tiny model is built locally; never download
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _met(row: Row) -> str:
    return "-" if row.met is None else "yes" if row.met else "NO"


def table(rows: Sequence[Row]) -> str:
    """A Markdown table (readable in a terminal, pasteable into RESULTS.md), then the notes."""
    lines = ["| Benchmark | Metric | Target | Measured | Met |", "|---|---|---|---|---|"]
    notes = []
    for row in rows:
        metric = row.metric
        if row.note:
            notes.append(row.note)
            metric += f" [{len(notes)}]"
        lines.append(f"| {row.benchmark} | {metric} | {row.target or '-'} | {row.measured} "
                     f"| {_met(row)} |")
    lines.append("")
    lines += [f"[{number}] {note}" for number, note in enumerate(notes, 1)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions and photos (about a third of the time)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME",
                        help=f"run only these: {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)
    _isolate()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    started = time.monotonic()
    rows: list[Row] = []
    results: dict[str, Any] = {}
    failed = []
    for name in args.only or list(BENCHMARKS):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        begin = time.monotonic()
        try:
            found, details = BENCHMARKS[name](args.quick)
            rows += found
            results[name] = {"seconds": round(time.monotonic() - begin, 1), "details": details}
        except Exception as error:  # report it and go on with the other benchmarks
            traceback.print_exc()
            failed.append(name)
            rows.append(Row(name, "benchmark", "", f"FAILED: {type(error).__name__}: {error}",
                            False))
            results[name] = {"seconds": round(time.monotonic() - begin, 1),
                             "error": f"{type(error).__name__}: {error}"}
        print(f"  {name}: {time.monotonic() - begin:.0f} s", file=sys.stderr, flush=True)

    report = {
        "date": date.today().isoformat(), "quick": args.quick, "machine": machine(),
        "seconds": round(time.monotonic() - started, 1),
        "rows": [row.as_dict() for row in rows], "benchmarks": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    info = report["machine"]
    print(f"\nVisual Tourism benchmarks, {report['date']}{' (--quick)' if args.quick else ''}: "
          f"{info['machine']}, {info['cpus']} CPUs, Python {info['python']}; "
          f"{report['seconds']:.0f} s\n")
    print(table(rows))
    shown = args.out.resolve()
    print(f"\nJSON: {shown.relative_to(Path.cwd()) if shown.is_relative_to(Path.cwd()) else shown}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
