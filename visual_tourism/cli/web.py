"""`visual-tourism web`: the page's link with its access code, as text and a terminal QR code;
``--rotate-code`` replaces the code (the old link stops working within a minute)."""

from __future__ import annotations

import argparse

from .. import web
from ..aws import Aws
from .common import config_from_args, say


def cmd_web(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    aws = Aws(cfg.region)
    if args.rotate_code:
        web.rotate_code(aws, cfg)
        say("New access code set: links with the old one stop working within a minute.")
    link = web.link(aws, cfg)
    say(f"The web page (the access code is in the link after '#'):\n  {link}\n")
    if not args.no_qr:
        say(web.terminal_qr(link))
    return 0


def add_cli(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "web", parents=[common], help="print the web page's link and QR code (phones scan it)",
        description="Print the link of the class's web page, with the access code in its "
        "fragment, and the same link as a QR code for phones to scan. With --rotate-code, "
        "replace the access code first: links with the old code stop working within a minute. "
        "In local mode the page is served by 'visual-tourism local serve --web' (plain 'local "
        "serve' does not serve it); this prints that link while it runs.",
    )
    p.add_argument("--rotate-code", action="store_true",
                   help="replace the access code first (old links stop working)")
    p.add_argument("--no-qr", action="store_true", help="print the link only")
    p.set_defaults(func=cmd_web)
