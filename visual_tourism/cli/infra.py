"""`visual-tourism infra package|deploy|delete|lint`: the stack as one CloudFormation template
(visual_tourism/infra.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import infra
from .common import config_from_args, say


def cmd_package(args: argparse.Namespace) -> int:
    result = infra.package(config_from_args(args), out_dir=Path(args.out_dir), progress=say)
    say(f"next: visual-tourism infra deploy --out-dir {args.out_dir}")
    say(json.dumps({"code": f"s3://{result.code_bucket}/{result.code_key}"}, indent=2))
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    result = infra.deploy(config_from_args(args), out_dir=Path(args.out_dir), progress=say,
                          poll=args.poll)
    say(json.dumps(result, indent=2))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    removed = infra.delete(
        config_from_args(args), delete_bucket=args.delete_bucket,
        delete_artifacts=args.delete_artifacts, progress=say, poll=args.poll,
    )
    say(f"delete: removed {', '.join(removed)}" if removed else "delete: nothing to remove")
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    findings = infra.lint(Path(args.template), regions=[args.region] if args.region else None)
    for line in findings:
        say(line)
    say(f"{args.template}: {len(findings)} finding(s)" if findings else f"{args.template}: ok")
    return 1 if findings else 0


def add_cli(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """`visual-tourism infra package|deploy|delete|lint`."""
    group = sub.add_parser("infra", help="the same stack as one CloudFormation template")
    infra_sub = group.add_subparsers(dest="infra_command", required=True, metavar="COMMAND",
                                     help="what to do with the template")
    out_help = "folder of packaged.yaml and parameters.json (default: build)"

    p = infra_sub.add_parser("package", parents=[common],
                             help="upload the Lambda zip; write the template and parameters")
    p.add_argument("--out-dir", default="build", help=out_help)
    p.set_defaults(func=cmd_package)

    p = infra_sub.add_parser("deploy", parents=[common],
                             help="create or update the CloudFormation stack")
    p.add_argument("--out-dir", default="build", help=out_help)
    p.add_argument("--poll", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between checks of the stack's events")
    p.set_defaults(func=cmd_deploy)

    p = infra_sub.add_parser("delete", parents=[common], help="delete the CloudFormation stack")
    p.add_argument("--delete-bucket", action="store_true",
                   help="also empty and delete the kept bucket (photos and results are lost)")
    p.add_argument("--delete-artifacts", action="store_true",
                   help="also empty and delete the artifacts bucket (Lambda zips)")
    p.add_argument("--poll", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between checks of the stack's events")
    p.set_defaults(func=cmd_delete)

    p = infra_sub.add_parser("lint", help="check the template with cfn-lint")
    p.add_argument("--template", default=str(infra.TEMPLATE),
                   help="the template file to check (default: the project's infra/template.yaml)")
    p.add_argument("--region", help="region to validate against (default: us-east-1)")
    p.set_defaults(func=cmd_lint)
