"""The ``capsynth`` command line.

    capsynth prepare [--params params.yaml] ...   run one stage by hand
    capsynth profile smoke                        print `dvc exp run` -S args
    capsynth profile smoke --write OUT.yaml       params.yaml + profile, as a file
"""

from __future__ import annotations

import argparse
import sys

from pipelines import config

# stage name -> module with a `main(argv)`; imported lazily so `capsynth --help` is fast
STAGES = {"prepare": "pipelines.prepare"}


def _profile(args: argparse.Namespace) -> None:
    if args.write:
        config.write_profile_params(args.params, args.name, args.write)
        print(f"wrote {args.write}", file=sys.stderr)
    else:
        print(" ".join(config.set_args(args.name)))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in STAGES:
        import importlib

        importlib.import_module(STAGES[argv[0]]).main(argv[1:])
        return
    parser = argparse.ArgumentParser(prog="capsynth", description="capsynth pipeline tools")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in STAGES:
        sub.add_parser(stage, help=f"run the '{stage}' stage (see --help of it)")
    p = sub.add_parser("profile", help="apply a params profile (e.g. smoke)")
    p.add_argument("name")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--write", metavar="OUT", help="write params + profile to OUT instead")
    p.set_defaults(fn=_profile)
    args = parser.parse_args(argv)
    try:
        args.fn(args)
    except config.ConfigError as err:
        parser.exit(2, f"capsynth: error: {err}\n")


if __name__ == "__main__":
    main()
