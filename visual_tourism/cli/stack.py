"""`visual-tourism up|wake|sleep|status|down|ask|replay`: the stack on AWS, or on the local
stand-in the environment points at (visual_tourism/stack.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import async_inference, calls, quotas, stack
from ..aws import Aws
from .common import config_from_args, labelled, print_result, say


def cmd_up(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, stop_after=args.stop_after)
    if not args.show_calls:
        names = stack.up(cfg, progress=say)
        say(json.dumps(names, indent=2))
        return 0
    aws = Aws(cfg.region)
    with calls.record(aws) as recording:
        names = stack.up(cfg, aws, progress=say)
    say(json.dumps(names, indent=2))
    say(f"\n# The AWS calls 'up' made ({recording.summary()}), as boto3 code; account IDs "
         "and secrets masked:\n")
    say(recording.snippet(reads=True))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    info = stack.status(config_from_args(args))
    if args.json:
        say(json.dumps(info, indent=2, default=str))
        return 0
    say(f"region {info['region']}, model profile {info['profile']}")
    for part in ("model", "bucket", "roles", "presets", "endpoint", "inference", "autoscaling",
                 "function", "delivery", "web"):
        say(labelled(part, json.dumps(info[part], default=str)))
    deadline = info["deadline"]
    managed = info["model"]["kind"] == "bedrock"  # Amazon Bedrock: no endpoint to stop
    say(labelled("deadline", (
        f"{deadline['action']} at {deadline['fires_at']} (in {deadline['in_minutes']} min)"
        if deadline else "none needed: a managed model has nothing to stop" if managed
        else "none (set one with 'up --stop-after 3h')")))
    say(labelled("cost", info["cost"]))
    if info.get("places_cost"):
        say(labelled("places cost", info["places_cost"]))
    so_far = info["cost_so_far"]
    least = "" if so_far.get("complete", True) else "at least "  # scaling history incomplete
    say(labelled("cost so far", f"{least}${so_far['so_far_usd']} (next hour "
                                f"${so_far['next_hour_usd']}): {so_far['note']}"))
    return 0


def cmd_wake(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, inference_mode="async")
    aws = Aws(cfg.region)
    with quotas.explained(aws, cfg, f"Waking {cfg.endpoint_name}"):
        async_inference.wake(aws, cfg, args.instances)
    say(f"{cfg.endpoint_name}: {args.instances} instance(s) held until 'visual-tourism sleep' "
         f"(a GPU instance takes about {async_inference.WAKE_MINUTES} minutes to start on AWS)")
    return 0


def cmd_sleep(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, inference_mode="async")
    async_inference.sleep(Aws(cfg.region), cfg)
    say(f"{cfg.endpoint_name}: capacity 0 now; a queued photo wakes it again")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    removed = stack.down(config_from_args(args), delete_bucket=args.delete_bucket, progress=say,
                         keep_presets=args.keep_presets or None)
    say(f"down: removed {len(removed)} resource(s)" if removed else "down: nothing to remove")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    record = stack.ask(args.image, config_from_args(args), timeout=args.timeout, progress=say,
                       preset=args.preset, language=args.language, near=args.near)
    print_result(record)
    return 0 if record.get("status") == "ok" else 1


def cmd_replay(args: argparse.Namespace) -> int:
    counts = stack.replay(config_from_args(args), errors=args.errors, dry_run=args.dry_run)
    verb = "would re-drive" if args.dry_run else "re-drove"
    found = counts["failed_events"] + counts["error_records"]
    say(f"replay: {verb} {found if args.dry_run else counts['redriven']} event(s): "
         f"{counts['failed_events']} failed event(s) from the on-failure destination"
         + (f", {counts['error_records']} photo(s) with a transient error result"
            if args.errors else ""))
    return 0


def add_cli(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "up", parents=[common], help="create or update everything",
        description="Create or update the bucket, roles, endpoint, function, autoscaling and "
                    "trigger, in that order. Safe to re-run: finished steps are checked, not "
                    "repeated. On AWS the endpoint takes 10-15 minutes and bills by the hour "
                    "until 'down'.",
    )
    p.add_argument("--stop-after", metavar="DURATION",
                   help="stop the endpoint after this long, e.g. 3h or 90m (a schedule deletes "
                        "it, or scales an async one to zero) (default: VT_STOP_AFTER, else "
                        "never)")
    p.add_argument("--show-calls", action="store_true",
                   help="after 'up', print every AWS request it made, in order, as boto3 code "
                        "(read-only checks marked; account IDs, secrets and file contents "
                        "masked)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser(
        "wake", parents=[common], help="hold async capacity (before a class)",
        description="Scale an asynchronous endpoint up now and hold it there until 'sleep', "
                    "so the first photos do not wait for a GPU instance to start.",
    )
    p.add_argument("--instances", type=int, default=1, help="number of instances to hold")
    p.set_defaults(func=cmd_wake)
    p = sub.add_parser(
        "sleep", parents=[common], help="async capacity to zero now",
        description="Scale an asynchronous endpoint to zero instances now; a queued photo "
                    "wakes it again.",
    )
    p.set_defaults(func=cmd_sleep)

    p = sub.add_parser(
        "status", parents=[common], help="what exists and what it costs",
        description="Show each part of the stack (present or absent, its state) and the hourly "
                    "cost of what is running. Changes nothing.",
    )
    p.add_argument("--json", action="store_true",
                   help="print the full status as JSON (the text form is wrapped to fit the "
                        "terminal)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "down", parents=[common], help="remove everything up created",
        description="Remove, newest first, everything 'up' created and tagged for this prefix. "
                    "Keeps the bucket (photos and results) unless --delete-bucket. Safe to "
                    "run twice.",
    )
    p.add_argument("--delete-bucket", action="store_true",
                   help="also empty and delete the bucket (photos and results are lost)")
    p.add_argument("--keep-presets", action="store_true",
                   help="keep the presets table and its edits (default: VT_KEEP_PRESETS, "
                        "else removed)")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser(
        "ask", parents=[common], help="upload a photo and print the answer",
        description="Upload a photo under input/, wait for its result record under output/ and "
                    "print the answer (or the error). Exit status 0 for an answer, 1 for an "
                    "error record.",
    )
    p.add_argument("image", type=Path, help="the photo to upload (JPEG, PNG, GIF, WebP or BMP)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="seconds to wait for the result record (default: 300; async: the "
                        "request TTL + 60)")
    p.add_argument("--preset", metavar="NAME",
                   help="answer preset, e.g. family, history, food (default: none sent: the "
                        "handler answers with 'default'; 'visual-tourism presets list' shows "
                        "them)")
    p.add_argument("--language", metavar="NAME",
                   help="answer language offered by the preset, by name or code in any "
                        "case, e.g. French, french or fr (default: none sent: the preset's "
                        "own language)")
    p.add_argument("--near", metavar="LAT,LON",
                   help="where the photo was taken, latitude first, e.g. 41.9009,12.4833: "
                        "the answer recommends among the real places to eat near it (sent "
                        "rounded to about 100 m; default: the photo's own GPS, if any)")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("replay", parents=[common],
                       help="re-drive the events Lambda gave up on (its on-failure records)")
    p.add_argument("--errors", action="store_true",
                   help="also re-drive photos whose result is a transient error")
    p.add_argument("--dry-run", action="store_true", help="count, re-drive nothing")
    p.set_defaults(func=cmd_replay)
