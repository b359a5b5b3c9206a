"""`visual-tourism`: the command line over the same functions the notebooks call.

Adding a subcommand or an option (the convention, checked by tests/test_cli.py):
- build it under the parser tree of ``build_parser`` (a module with several subcommands gets an
  ``add_cli(sub, common)`` like ``infra.py``); import shared pieces from ``cli_common``, never
  from this module;
- give every subcommand ``help=`` (its one-line summary; also its description unless it has its
  own ``description=``) and every argument ``help=`` that states its unit (seconds, MB, port,
  lines, ...);
- the default is appended to the help automatically (``(default: 8080)``); when the default is
  None or comes from the environment, say in the help what happens (``default: VT_X, else
  ...``);
- ``-v`` is added to every subcommand by ``cli_common.Parser``; do not add your own.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import stack
from .cli_common import (
    Parser,
    as_typed,
    command,
    common_options,
    config_from_args,
    printable,
    say,
)
from .config import IMAGES_DIR
from .errors import PortInUseError, VisualTourismError

DEFAULT_PHOTO = IMAGES_DIR / "tour_eiffel.jpeg"
LOCAL_DIR = Path.home() / ".visual-tourism" / "local"
_say = say
_config = config_from_args


def print_result(record: dict[str, Any]) -> None:
    if record.get("status") == "ok":
        _say("\n" + textwrap.fill(printable(str(record["answer"])), width=88) + "\n")
    else:
        error = record.get("error", {})
        _say(f"\nNo answer: {printable(str(error.get('code')))}: "
             f"{printable(str(error.get('message')))}\n")
    _say(f"(result record: {record.get('result_key')}, seen "
         f"{record.get('seen_after_seconds')} s after upload)")


def cmd_up(args: argparse.Namespace) -> int:
    cfg = _config(args, stop_after=args.stop_after)
    if not args.show_calls:
        names = stack.up(cfg, progress=_say)
        _say(json.dumps(names, indent=2))
        return 0
    from . import calls
    from .aws import Aws

    aws = Aws(cfg.region)
    with calls.record(aws) as recording:
        names = stack.up(cfg, aws, progress=_say)
    _say(json.dumps(names, indent=2))
    _say(f"\n# The AWS calls 'up' made ({recording.summary()}), as boto3 code; account IDs "
         "and secrets masked:\n")
    _say(recording.snippet(reads=True))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    info = stack.status(_config(args))
    if args.json:
        _say(json.dumps(info, indent=2, default=str))
        return 0
    _say(f"region {info['region']}, model profile {info['profile']}")
    for part in ("bucket", "roles", "presets", "endpoint", "inference", "autoscaling", "function",
                 "delivery", "web"):
        _say(f"  {part:12} {json.dumps(info[part], default=str)}")
    deadline = info["deadline"]
    _say(f"  {'deadline':12} " + (
        f"{deadline['action']} at {deadline['fires_at']} (in {deadline['in_minutes']} min)"
        if deadline else "none (set one with 'up --stop-after 3h')"))
    _say(f"  {'cost':12} {info['cost']}")
    so_far = info["cost_so_far"]
    least = "" if so_far.get("complete", True) else "at least "  # scaling history incomplete
    _say(f"  {'cost so far':12} {least}${so_far['so_far_usd']} (next hour "
         f"${so_far['next_hour_usd']}): {so_far['note']}")
    return 0


def cmd_wake(args: argparse.Namespace) -> int:
    from . import async_inference
    from .aws import Aws

    cfg = _config(args, inference_mode="async")
    async_inference.wake(Aws(cfg.region), cfg, args.instances)
    _say(f"{cfg.endpoint_name}: {args.instances} instance(s) held until 'visual-tourism sleep' "
         f"(a GPU instance takes about {async_inference.WAKE_MINUTES} minutes to start on AWS)")
    return 0


def cmd_sleep(args: argparse.Namespace) -> int:
    from . import async_inference
    from .aws import Aws

    cfg = _config(args, inference_mode="async")
    async_inference.sleep(Aws(cfg.region), cfg)
    _say(f"{cfg.endpoint_name}: capacity 0 now; a queued photo wakes it again")
    return 0




def cmd_down(args: argparse.Namespace) -> int:
    removed = stack.down(_config(args), delete_bucket=args.delete_bucket, progress=_say,
                         keep_presets=args.keep_presets or None)
    _say(f"down: removed {len(removed)} resource(s)" if removed else "down: nothing to remove")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    record = stack.ask(args.image, _config(args), timeout=args.timeout, progress=_say,
                       preset=args.preset, language=args.language)
    print_result(record)
    return 0 if record.get("status") == "ok" else 1


def cmd_replay(args: argparse.Namespace) -> int:
    counts = stack.replay(_config(args), errors=args.errors, dry_run=args.dry_run)
    verb = "would re-drive" if args.dry_run else "re-drove"
    found = counts["failed_events"] + counts["error_records"]
    _say(f"replay: {verb} {found if args.dry_run else counts['redriven']} event(s): "
         f"{counts['failed_events']} failed event(s) from the on-failure destination"
         + (f", {counts['error_records']} photo(s) with a transient error result"
            if args.errors else ""))
    return 0


def cmd_local_demo(args: argparse.Namespace) -> int:
    from .local.stack import LocalStack, environment

    _say("Local mode: S3, IAM, Lambda and SageMaker are emulated on this machine (no AWS).")
    with LocalStack(model=args.model) as local, environment(local.env):
        _say(f"model server: {local.backend_description}")
        if local.backend_reason:
            _say(f"  ({local.backend_reason})")
        cfg = _config(args, region="us-east-1", state_dir=str(local.work_dir / "state"))
        stack.up(cfg, progress=_say, endpoint_poll=0.5)
        record = stack.ask(args.image, cfg, timeout=args.timeout, progress=_say)
        print_result(record)
        _say(f"answered by: {local.backend_description}")
        local.runtime.wait_idle(10)
        if args.logs:
            _say(local.log_path(cfg.function_name).read_text())
        stack.down(cfg, delete_bucket=True, progress=_say)
    _say("local stack stopped")
    return 0 if record.get("status") == "ok" else 1


def cmd_local_serve(args: argparse.Namespace) -> int:
    from .local.stack import AWS_STAND_IN, LocalStack

    work_dir = Path(args.dir).expanduser()
    work_dir.mkdir(parents=True, exist_ok=True)
    vt = command()

    def on_sigterm(*_: object) -> None:
        raise KeyboardInterrupt  # the same prompt, orderly stop as Ctrl-C

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with LocalStack(model=args.model, work_dir=work_dir, moto_port=args.port,
                        model_port=args.model_port) as local:
            _say(f"Local stack running; model server: {local.backend_description}")
            if local.backend_reason:
                _say(f"  ({local.backend_reason})")
            front = _serve_web(args, local, work_dir) if args.web else None
            _say("Point boto3, the CLI and the notebooks at it: in another shell, in this "
                 "folder, paste\n")
            for key, value in local.env.items():
                _say(f"export {key}={value}")
            _say(f"export VT_STATE_DIR={work_dir / 'state'}")
            _say(f"\nThen: {vt} ask images/tour_eiffel.jpeg" if front else
                 f"\nThen: {vt} up; {vt} ask images/tour_eiffel.jpeg")
            if front is None:
                _say("Web page: not served (add --web to run 'up' and serve it on 127.0.0.1; "
                     "it prints the link)")
            _say(f"Handler logs: {vt} local logs --dir {work_dir}. Ctrl-C stops.")
            try:
                threading.Event().wait()  # until Ctrl-C or SIGTERM
            finally:
                if front is not None:
                    front.stop()
    except PortInUseError as exc:
        option = "--port" if exc.what == AWS_STAND_IN else "--model-port"
        raise PortInUseError(exc.what, exc.host, exc.port, option=option) from None
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    _say("local serve: stopped")
    return 0


def _serve_web(args: argparse.Namespace, local: Any, work_dir: Path) -> Any:
    """`local serve --web`: run `up` on the local stack, then serve the web page."""
    from .local.stack import environment
    from .local.web_front import serve_local

    with environment(local.env):
        cfg = _config(args, region="us-east-1", state_dir=str(work_dir / "state"),
                      web_api="on")
        stack.up(cfg, progress=_say, endpoint_poll=0.5)
        front, link = serve_local(cfg, local, port=args.web_port)
    _say(f"\nThe web page (on this machine; the access code is in the link):\n  {link}\n")
    return front


def cmd_local_logs(args: argparse.Namespace) -> int:
    logs = Path(args.dir) / "logs"
    files = sorted(logs.glob("*.log")) if logs.is_dir() else []
    if not files:
        _say(f"No handler logs under {logs} yet (is '{command()} local serve' running?)")
        return 1
    for path in files:
        _say(f"==> {path.name} <==")
        lines = path.read_text().splitlines()
        _say("\n".join(lines[-args.lines:]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="visual-tourism",
        description="Photo in, travel advice out: build, inspect and remove the stack, on AWS "
                    "or on this machine ('local').",
    )
    common = common_options()
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="what to do (COMMAND -h for its options)")

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
    p.add_argument("--json", action="store_true", help="print the full status as JSON")
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
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("replay", parents=[common],
                       help="re-drive the events Lambda gave up on (its on-failure records)")
    p.add_argument("--errors", action="store_true",
                   help="also re-drive photos whose result is a transient error")
    p.add_argument("--dry-run", action="store_true", help="count, re-drive nothing")
    p.set_defaults(func=cmd_replay)

    local = sub.add_parser("local", help="the whole workflow on this machine, no AWS account")
    local_sub = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND",
                                     help="what to do locally")
    model_help = ("model for the local server: a Hugging Face id or path, or 'stand-in' "
                  "(default: VT_LOCAL_MODEL, else a small SmolVLM when it can be loaded, else "
                  "the offline stand-in)")
    p = local_sub.add_parser("demo", parents=[common], help="up, ask about a photo, down, stop")
    p.add_argument("--image", type=Path, default=DEFAULT_PHOTO,
                   help="the photo to ask about (default: images/tour_eiffel.jpeg)")
    p.add_argument("--model", default=None, help=model_help)
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="seconds to wait for the answer")
    p.add_argument("--logs", action="store_true", help="print the handler's log at the end")
    p.set_defaults(func=cmd_local_demo)
    p = local_sub.add_parser("serve", help="keep the local stack running; print its variables")
    p.add_argument("--model", default=None, help=model_help)
    p.add_argument("--port", type=int, default=5000,
                   help="TCP port of the AWS stand-in on 127.0.0.1 ; 0 picks a free one")
    p.add_argument("--model-port", type=int, default=8080,
                   help="TCP port of the model server on 127.0.0.1 ; 0 picks a free one")
    p.add_argument("--dir", default=str(LOCAL_DIR), metavar="DIR",
                   help="folder for handler logs and state (default: "
                        "~/.visual-tourism/local)")
    p.add_argument("--web", action="store_true",
                   help="also run 'up' and serve the web page on 127.0.0.1, printing its link "
                        "(without it, only the AWS stand-in and the model server run)")
    p.add_argument("--web-port", type=int, default=8000,
                   help="TCP port of the web page on 127.0.0.1 with --web; 0 picks a free one")
    p.set_defaults(func=cmd_local_serve)
    p = local_sub.add_parser("logs", help="print the local handler's log lines")
    p.add_argument("--dir", default=str(LOCAL_DIR), metavar="DIR",
                   help="the folder 'local serve' uses (default: ~/.visual-tourism/local)")
    p.add_argument("-n", "--lines", type=int, default=50,
                   help="number of last lines to print per log file")
    p.set_defaults(func=cmd_local_logs)

    from .infra import add_cli  # CloudFormation: package / deploy / delete / lint

    add_cli(sub, common)
    from . import web_cli  # the web page's link, QR code and access code

    web_cli.add_cli(sub, common, _config)
    from . import permissions_cli  # check (the preflight) and admin-policy

    permissions_cli.add_cli(sub, common, _config)
    from . import profiles_cli  # the model lineup (offline) and the labelled-photo eval

    profiles_cli.add_cli(sub, common, _config)
    from . import presets_cli  # list, show, set and delete the answer presets

    presets_cli.add_cli(sub, common, _config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except VisualTourismError as exc:
        print(f"error: {as_typed(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
