"""Reproduce a shipped shapes-world model from a seed on a CPU:

    python -m mmalign.shapes.train shapes-clip [--steps N] [--seed S] [--output-dir DIR] [--fresh]

Training checkpoints atomically every few hundred steps and resumes from them unless ``--fresh``;
the final weights are fp16 safetensors in the output folder (by default the package's own
``mmalign/shapes/weights/<name>``, which is what ships).
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
RECIPES = {
    "shapes-clip": "mmalign.shapes.train_clip",
    "shapes-object": "mmalign.shapes.train_object",
    "shapes-sd": "mmalign.shapes.train_sd",
    "shapes-turbo": "mmalign.shapes.train_turbo",
    "shapes-flow": "mmalign.shapes.train_flow",
    "shapes-video": "mmalign.shapes.train_video",
    "shapes-lm": "mmalign.shapes.train_lm",
    "shapes-lm-rm": "mmalign.shapes.train_lm_rm",  # starts from shapes-lm: train that first
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mmalign.shapes.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--steps", type=int, default=None, help="total optimiser steps (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=None)
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    args = parser.parse_args(argv)
    recipe = importlib.import_module(RECIPES[args.name])
    output_dir = args.output_dir or WEIGHTS_DIR / args.name
    steps = args.steps or recipe.DEFAULTS["steps"]
    summary = recipe.train(output_dir, steps=steps, seed=args.seed, resume=not args.fresh)
    summary = {k: v for k, v in summary.items() if not k.endswith("losses")}
    print(json.dumps({"model": args.name, "output_dir": str(output_dir), **summary}))


if __name__ == "__main__":
    main()
