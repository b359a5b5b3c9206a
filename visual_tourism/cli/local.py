"""`visual-tourism local demo|serve|logs`: the whole workflow on this machine, no AWS account
(visual_tourism/local/).

The local stack is imported inside each command: it needs moto, an optional dependency
(``pip install -e '.[local]'``) that the commands for AWS never load.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

from .. import stack
from ..config import IMAGES_DIR
from ..errors import PortInUseError
from .common import command, config_from_args, print_result, say, wait_for_interrupt

DEFAULT_PHOTO = IMAGES_DIR / "tour_eiffel.jpeg"
LOCAL_DIR = Path.home() / ".visual-tourism" / "local"


def cmd_local_demo(args: argparse.Namespace) -> int:
    from ..local.stack import LocalStack, environment

    say("Local mode: S3, IAM, Lambda and SageMaker are emulated on this machine (no AWS).")
    with LocalStack(model=args.model) as local, environment(local.env):
        say(f"model server: {local.backend_description}")
        if local.backend_reason:
            say(f"  ({local.backend_reason})")
        cfg = config_from_args(args, region="us-east-1", state_dir=str(local.work_dir / "state"))
        stack.up(cfg, progress=say, endpoint_poll=0.5)
        record = stack.ask(args.image, cfg, timeout=args.timeout, progress=say)
        print_result(record)
        say(f"answered by: {local.backend_description}")
        local.runtime.wait_idle(10)
        if args.logs:
            say(local.log_path(cfg.function_name).read_text())
        stack.down(cfg, delete_bucket=True, progress=say)
    say("local stack stopped")
    return 0 if record.get("status") == "ok" else 1


def cmd_local_serve(args: argparse.Namespace) -> int:
    from ..local.stack import AWS_STAND_IN, LocalStack

    work_dir = Path(args.dir).expanduser()
    work_dir.mkdir(parents=True, exist_ok=True)
    vt = command()

    def on_signal(*_: object) -> None:
        raise KeyboardInterrupt  # SIGTERM: the same prompt, orderly stop as Ctrl-C

    # It says "Ctrl-C stops": so it must, whatever the parent left (seen under a test
    # harness: SIGINT ignored or blocked, inherited across exec, and Ctrl-C did nothing).
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, on_signal) for sig in stops}
    if hasattr(signal, "pthread_sigmask"):  # POSIX only
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)  # before any thread: they inherit it
    try:
        with LocalStack(model=args.model, work_dir=work_dir, moto_port=args.port,
                        model_port=args.model_port) as local:
            say(f"Local stack running; model server: {local.backend_description}")
            if local.backend_reason:
                say(f"  ({local.backend_reason})")
            front = _serve_web(args, local, work_dir) if args.web else None
            say("Point boto3, the CLI and the notebooks at it: in another shell, in this "
                 "folder, paste\n")
            for key, value in local.env.items():
                say(f"export {key}={value}")
            say(f"export VT_STATE_DIR={work_dir / 'state'}")
            say(f"\nThen: {vt} ask images/tour_eiffel.jpeg" if front else
                 f"\nThen: {vt} up; {vt} ask images/tour_eiffel.jpeg")
            if front is None:
                say("Web page: not served (add --web to run 'up' and serve it on 127.0.0.1; "
                     "it prints the link)")
            say(f"Handler logs: {vt} local logs --dir {work_dir}. Ctrl-C stops.")
            try:
                wait_for_interrupt()
            finally:
                if front is not None:
                    front.stop()
    except PortInUseError as exc:
        option = "--port" if exc.what == AWS_STAND_IN else "--model-port"
        raise PortInUseError(exc.what, exc.host, exc.port, option=option) from None
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say("local serve: stopped")
    return 0


def _serve_web(args: argparse.Namespace, local: Any, work_dir: Path) -> Any:
    """`local serve --web`: run `up` on the local stack, then serve the web page."""
    from ..local.stack import environment
    from ..local.web_front import serve_local

    with environment(local.env):
        cfg = config_from_args(args, region="us-east-1", state_dir=str(work_dir / "state"),
                      web_api="on")
        stack.up(cfg, progress=say, endpoint_poll=0.5)
        front, link = serve_local(cfg, local, port=args.web_port)
    say(f"\nThe web page (on this machine; the access code is in the link):\n  {link}\n")
    return front


def cmd_local_logs(args: argparse.Namespace) -> int:
    logs = Path(args.dir) / "logs"
    files = sorted(logs.glob("*.log")) if logs.is_dir() else []
    if not files:
        say(f"No handler logs under {logs} yet (is '{command()} local serve' running?)")
        return 1
    for path in files:
        say(f"==> {path.name} <==")
        lines = path.read_text().splitlines()
        say("\n".join(lines[-args.lines:]))
    return 0


def add_cli(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
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
