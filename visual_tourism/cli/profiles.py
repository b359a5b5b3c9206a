"""`visual-tourism profiles`: the model lineup, offline (visual_tourism/profiles.py)."""

from __future__ import annotations

import argparse
import json

from .. import prices, profiles
from .common import WIDE_HELP, say, table, wrapped

# What a terminal too narrow for the whole lineup shows: enough to choose by price.
NARROW = ("Profile", "Instance", "Price/hour")


def cmd_profiles(args: argparse.Namespace) -> int:
    if args.json:
        say(json.dumps(profiles.lineup(), indent=2))
    elif args.markdown:
        print(profiles.markdown_table(), end="")
    else:
        for line in table(profiles.TABLE_HEADERS, profiles.table_rows(), wide=args.wide,
                          narrow=NARROW):
            say(line)
        say("\n" + wrapped(
            f"Prices: {prices.PRICE_REGION} on-demand list prices as of {prices.PRICE_DATE}, "
            f"per instance-hour ({prices.PRICE_SOURCE}). Managed models (Amazon Bedrock: "
            "nova-lite, llama3.2-11b-vision) bill nothing per hour, only the tokens of each "
            f"photo, per 1M tokens in+out ({prices.BEDROCK_PRICE_SOURCE}; third-party figures, "
            "unverified). The default is "
            f"{profiles.DEFAULT_PROFILE}; pick another with --model-profile or "
            "VT_MODEL_PROFILE."))
    return 0


def add_cli(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "profiles", help="list the model profiles: model, container, instance, price, limits",
        description="Print the model lineup as a table: each profile's model and pinned "
        "revision, container and version, instance, list price per hour, licence, limits "
        "(input/total tokens, payload, stop sequences, images), request style, and which one "
        "is the default. Offline: needs no AWS credentials.",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true",
                     help="print every field as JSON (prices in USD per hour, payload in bytes)")
    fmt.add_argument("--markdown", action="store_true",
                     help="print the Markdown table of docs/models.md")
    fmt.add_argument("--wide", action="store_true", help=WIDE_HELP)
    p.set_defaults(func=cmd_profiles)
