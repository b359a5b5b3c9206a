"""`visual-tourism eval`: how each profile does on the labelled photos
(visual_tourism/evaluation.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import evaluation
from ..config import IMAGES_DIR
from .common import config_from_args, say


def cmd_eval(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    names = [n.strip() for n in (args.profiles or "").split(",") if n.strip()]
    if args.profiles is not None:
        full = evaluation.compare(names, cfg, yes=args.yes, progress=say,
                                  labels_path=args.labels,
                                  include_example=args.include_example, timeout=args.timeout)
    else:
        result = evaluation.run_eval(cfg, labels_path=args.labels,
                                     include_example=args.include_example,
                                     timeout=args.timeout, progress=say)
        full = evaluation.report([result], labels_path=args.labels,
                                 include_example=args.include_example)
    say("\n" + evaluation.format_report(full))
    out = Path(args.out) if args.out else evaluation.default_path(cfg, full["run_id"])
    _, _, note = evaluation.write(full, out)
    say("\n" + note)
    return 1 if any("error" in r for r in full["profiles"]) else 0


def add_cli(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "eval", parents=[common], help="score profiles on the labelled photos",
        description="Ask the deployed stack about each photo of images/labels.json, as a "
        "user would (upload, answer record), and print per profile: landmark, city and "
        "country recognised, latency p50/p95 in seconds, and an estimated cost per photo "
        "(list price per hour x model seconds / 3600; for a managed model, the tokens each "
        "record says it used at list price per token), and for every profile the cost per "
        "photo at 10, 100 and 1,000 photos a day, idle included. Hosted and managed profiles "
        "compare side by side (--profiles smolvlm-instruct,nova-lite). The in-context example "
        "trevi.jpeg is "
        "left out unless --include-example. Writes a JSON report and a PNG chart (with "
        "matplotlib). With --profiles a,b it deploys each profile in turn, evaluates it and "
        "removes it again (keeping the bucket); it states the estimated cost first and does "
        "nothing without --yes. In local mode the offline stand-in scores zero and says so.",
    )
    p.add_argument("--profiles", metavar="NAMES",
                   help="comma-separated profiles to deploy, evaluate and remove in turn "
                        "(default: none: evaluate the stack as it is deployed now)")
    p.add_argument("--yes", action="store_true",
                   help="accept the estimated cost of --profiles (without it nothing is "
                        "deployed)")
    p.add_argument("--out", metavar="FILE",
                   help="JSON report path; the chart is written beside it as .png (default: "
                        "<state dir>/eval/<prefix>-<time>.json)")
    p.add_argument("--labels", metavar="FILE", default=str(IMAGES_DIR / "labels.json"),
                   help="labels file: landmark, city, country and aliases per photo (default: "
                        "images/labels.json of this project)")
    p.add_argument("--include-example", action="store_true",
                   help="also ask about the in-context example (its answer is in the prompt)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="seconds to wait for each photo's result record (default: 300; async: "
                        "the request TTL + 60)")
    p.set_defaults(func=cmd_eval)
