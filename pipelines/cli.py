"""The ``capsynth`` command line.

    capsynth prepare [--params params.yaml] ...   run one stage by hand
    capsynth profile smoke                        print `dvc exp run` -S args
    capsynth profile smoke --write OUT.yaml       params.yaml + profile, as a file
    capsynth sample --model DIR -n 64 --seed S OUT.png   samples of a VAE/GAN as a PNG grid
    capsynth caption IMAGE... [--model DIR|models:/NAME@ALIAS] [--beam-size K]   one caption per image
    capsynth imagine "CAPTION" [-n 8] [--seed S] [--model DIR|models:/NAME@ALIAS] OUT.png   images of a caption
    capsynth sweep captioner|vae|gan [--params params.yaml]  Ray Tune search; best config as -S args
    capsynth runs [--keep N]                      list (or prune) the run folders under ray_results/
    capsynth seeds PARAM [--seeds 0 1 2] [-S K=V ...]   one setting over seeds as queued DVC experiments: mean ± std
"""

from __future__ import annotations

import argparse
import sys

from components import families
from pipelines import config

# stage name -> (module with a `main(argv)`, leading args); imported lazily so `capsynth --help` is fast
STAGES = {"prepare": ("pipelines.prepare", []), "features": ("pipelines.features", []),
          **{families.stage_of(name): ("pipelines.train", ["--family", name]) for name in families.names()},
          "evaluate": ("pipelines.evaluate", []), "pascal50s": ("pipelines.pascal50s", []),
          "register": ("pipelines.register", [])}
# other commands with their own argument parser, dispatched the same way
TOOLS = {"sample": ("pipelines.sample", "draw images from a VAE/GAN: sample --model DIR -n 64 --seed S OUT.png"),
         "caption": ("pipelines.caption", "caption image files: caption IMAGE... --model DIR|models:/NAME@ALIAS --beam-size K"),
         "imagine": ("pipelines.imagine", 'images of a caption: imagine "CAPTION" -n 8 --seed S OUT.png'),
         "sweep": ("pipelines.sweep", "Ray Tune search of a training stage: sweep captioner|vae|gan"),
         "runs": ("pipelines.runs", "list the Ray Train run folders; --keep N prunes all but N per family"),
         "seeds": ("pipelines.seeds", "one setting over several seeds as queued DVC experiments: mean ± std")}


def _profile(args: argparse.Namespace) -> None:
    if args.write:
        config.write_profile_params(args.params, args.name, args.write)
        print(f"wrote {args.write}", file=sys.stderr)
    else:
        print(" ".join(config.set_args(args.name)))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and (argv[0] in STAGES or argv[0] in TOOLS):
        import importlib

        module, lead = STAGES[argv[0]] if argv[0] in STAGES else (TOOLS[argv[0]][0], [])
        importlib.import_module(module).main([*lead, *argv[1:]])
        return
    parser = argparse.ArgumentParser(prog="capsynth", description="capsynth pipeline tools")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in STAGES:
        sub.add_parser(stage, help=f"run the '{stage}' stage (see --help of it)")
    for tool, (_, help_text) in TOOLS.items():
        sub.add_parser(tool, help=help_text)
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
