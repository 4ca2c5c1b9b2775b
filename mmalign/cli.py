"""The ``mmalign`` command line. ``mmalign <command> --help`` is the reference for each command."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

from .errors import InvalidInputError, MMAlignError

DEFAULT_OUTPUT_ROOT = Path("mmalign_outputs")


def print_table(header: list[str], rows: list[list[str]], file=sys.stdout) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for line in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip(), file=file)


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def check_device(device: str) -> None:
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise InvalidInputError(f"--device: {device!r} is not a torch device (cpu, cuda, cuda:1, mps).") from error
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("--device: CUDA is not available on this machine; use --device cpu.")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise InvalidInputError(f"--device: there is no {device}; this machine has {torch.cuda.device_count()} GPU(s).")


def check_sampling(args: argparse.Namespace) -> None:
    check_device(args.device)
    if args.num_inference_steps is not None and args.num_inference_steps < 1:
        raise InvalidInputError(f"--num-inference-steps: must be at least 1, got {args.num_inference_steps}.")
    if args.guidance_scale is not None and args.guidance_scale < 0:
        raise InvalidInputError(f"--guidance-scale: must be at least 0, got {args.guidance_scale}.")


def prepare_output_dir(path: str) -> Path:
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InvalidInputError(f"--output-dir: cannot use {path!r} as a folder ({error.strerror}).") from error
    return folder


def command_rewards(args: argparse.Namespace) -> int:
    from .rewards import list_rewards

    cards = list_rewards()
    if args.json:
        print(json.dumps([card.to_dict() for card in cards], indent=2))
        return 0
    rows = [
        [c.name, c.modality, "yes" if c.differentiable else "no", "yes" if c.needs_prompt else "no", c.output_kind, c.description]
        for c in cards
    ]
    print_table(["name", "modality", "differentiable", "prompt", "output", "description"], rows)
    print("\nAlso: clip:ARCH/TAG (any open_clip model), vlm-judge:ORG/NAME (any image-text-to-text model), "
          "local-dir:PATH, hf-hub:ORG/REPO, remote:HOST:PORT (mmalign serve-reward).")
    return 0


def command_score(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from .rewards import WeightedSum, load_reward, parse_weighted_name
    from .rewards.inputs import load_image

    if args.batch_size < 1:
        raise InvalidInputError(f"--batch-size: must be at least 1, got {args.batch_size}.")
    check_device(args.device)
    output_dir = prepare_output_dir(args.output_dir)
    named = [parse_weighted_name(text) for text in args.reward]
    rewards = [load_reward(name, device=args.device) for name, _ in named]
    combined = WeightedSum(rewards, [weight for _, weight in named])
    images = [load_image(path) for path in args.images]
    totals, heads = [], {}
    batches = range(0, len(images), args.batch_size)
    with torch.no_grad():
        for start in tqdm(batches, desc="scoring", unit="batch", disable=len(batches) < 2, file=sys.stderr):
            output = combined(images[start : start + args.batch_size], args.prompt)
            totals.extend(output.reward.tolist())
            for key, value in output.heads.items():
                heads.setdefault(key, []).extend(value.tolist())
    names = list(heads)
    results = [
        {"image": str(path), "scores": {n: _number(heads[n][i]) for n in names}, "total": _number(totals[i])}
        for i, path in enumerate(args.images)
    ]
    report = {"prompt": args.prompt, "rewards": [{"name": n, "weight": w} for n, w in named], "results": results}
    (output_dir / "scores.json").write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        show_total = len(named) > 1 or named[0][1] != 1.0
        header = ["image", *names] + (["total"] if show_total else [])
        rows = [[r["image"], *(_format(r["scores"][n]) for n in names)] + ([_format(r["total"])] if show_total else []) for r in results]
        print_table(header, rows)
        print(f"\nwrote {output_dir / 'scores.json'}", file=sys.stderr)
    return 0


def open_model(args: argparse.Namespace):
    """Check the sampling arguments, then the output folder and the pipeline of a sampling command."""
    from .models import load_lora, load_pipeline

    check_sampling(args)
    output_dir, pipeline = prepare_output_dir(args.output_dir), load_pipeline(args.model, args.device)
    if getattr(args, "lora", None):
        load_lora(pipeline, args.lora, args.model)
    return output_dir, pipeline


def sampling_kwargs(args: argparse.Namespace, fallback: dict | None = None) -> dict:
    """``num_inference_steps`` and ``guidance_scale``: what the user set, else the shipped model's
    own, else ``fallback`` (absent keys leave the pipeline's own defaults)."""
    from .models import sampling_defaults

    chosen = {"num_inference_steps": args.num_inference_steps, "guidance_scale": args.guidance_scale}
    return {**sampling_defaults(args.model, fallback), **{k: v for k, v in chosen.items() if v is not None}}


def generate_images_of(pipeline, prompts: list[str], args: argparse.Namespace, size: dict | None = None):
    from .sampling.pipelines import family
    from .shapes.evaluation import generate_images

    if family(pipeline) == "WanPipeline":
        raise InvalidInputError(f"--model: {args.model!r} is a video model; `mmalign generate` samples it, and "
                                "`mmalign eval` judges image models only.")
    return generate_images(pipeline, prompts, seed=args.seed, **sampling_kwargs(args), **(size or {}))


def command_generate(args: argparse.Namespace) -> int:
    from torchvision.utils import make_grid, save_image

    from .cli_flow import generate_video, size_kwargs
    from .sampling.flow import check_num_frames
    from .sampling.pipelines import family

    if args.num_images < 1:
        raise InvalidInputError(f"-n/--num-images: must be at least 1, got {args.num_images}.")
    output_dir, pipeline = open_model(args)
    if family(pipeline) == "WanPipeline":
        report = generate_video(args, output_dir, pipeline, sampling_kwargs(args))
        print(json.dumps(report, indent=2) if args.json else f"wrote {report['frames']} and {len(report['videos'])} videos")
        return 0
    size = size_kwargs(args)
    check_num_frames(pipeline, size.get("num_frames"), "--num-frames")  # refuses a length for images
    images = generate_images_of(pipeline, [args.prompt] * args.num_images, args, size)
    grid_path = output_dir / "grid.png"
    save_image(make_grid(images, nrow=min(8, len(images)), padding=2), grid_path)
    for index, image in enumerate(images):
        save_image(image, output_dir / f"{index:03d}.png")
    report = {"model": args.model, "prompt": args.prompt, "seed": args.seed, "grid": str(grid_path),
              "images": [str(output_dir / f"{i:03d}.png") for i in range(len(images))]}
    print(json.dumps(report, indent=2) if args.json else f"wrote {grid_path} and {len(images)} images")
    return 0


def command_eval(args: argparse.Namespace) -> int:
    from .rewards import load_reward
    from .shapes.evaluation import evaluate_images, evaluation_prompts

    if args.per_category < 1:
        raise InvalidInputError(f"--per-category: must be at least 1, got {args.per_category}.")
    output_dir, pipeline = open_model(args)
    proxy = load_reward(args.reward, device=args.device) if args.reward else None
    prompts = evaluation_prompts(args.split, args.per_category, args.seed)
    images = generate_images_of(pipeline, prompts, args)
    evaluation = evaluate_images(images, prompts, proxy)
    result = {"model": args.model, "split": args.split, "seed": args.seed, **evaluation.to_dict()}
    (output_dir / "eval.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2) if args.json else evaluation.table())
    return 0


def command_reno(args: argparse.Namespace) -> int:
    import torch

    from .algorithms import ReNOConfig, reno
    from .reports import comparison_sheet, reward_curve
    from .rewards import load_reward, parse_weighted_name

    if args.iterations < 0:
        raise InvalidInputError(f"--iterations: must be at least 0, got {args.iterations}.")
    output_dir, pipeline = open_model(args)
    named = [parse_weighted_name(text) for text in (args.reward or ["shapes-clip"])]
    config = ReNOConfig(iterations=args.iterations, learning_rate=args.learning_rate,
                        early_stopping_patience=args.early_stopping_patience,
                        gradient_checkpointing=args.gradient_checkpointing)
    call_kwargs = sampling_kwargs(args, fallback={"num_inference_steps": 1, "guidance_scale": 0.0})  # ReNO's one step
    rewards = [load_reward(name, device=args.device) for name, _ in named]
    result = reno(pipeline, args.prompt, rewards, [w for _, w in named], config,
                  generator=torch.Generator().manual_seed(args.seed), **call_kwargs)
    base, best = (result.rewards_at(0), result.rewards_at(result.best_iteration)) if result.history else ({}, {})

    def caption(rewards: dict, index: int) -> str:
        return "  ".join(f"{name} {values[index]:.3f}" for name, values in rewards.items())

    sheet = comparison_sheet({"base": result.base_images, "ReNO": result.images},
                             {"base": [caption(base, i) for i in range(len(args.prompt))],
                              "ReNO": [caption(best, i) for i in range(len(args.prompt))]},
                             args.prompt, output_dir / "reno.png")
    report = {"model": args.model, "prompts": args.prompt, "seed": args.seed, **call_kwargs,
              "rewards": [{"name": n, "weight": w} for n, w in named], "config": asdict(config),
              "base_rewards": base, "rewards_best": best, "best_iteration": result.best_iteration,
              "side_by_side": str(sheet), "history": result.history}
    if result.history:
        report["reward_curve"] = str(reward_curve(result.history, output_dir / "reward_curve.png",
                                                  title=f"ReNO on {args.model}"))
    (output_dir / "reno.json").write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        rows = [[prompt, *(f"{base[n][i]:.4f} → {best[n][i]:.4f}" for n in best), str(result.best_iteration[i])]
                for i, prompt in enumerate(args.prompt)]
        print_table(["prompt", *best, "best iteration"], rows)
        print(f"\nwrote {sheet}, {output_dir / 'reno.json'}" + (", reward_curve.png" if result.history else ""),
              file=sys.stderr)
    return 0


TRAINERS = {
    "raft": ("mmalign.algorithms.raft", "RAFTConfig", "raft"),
    "d3po": ("mmalign.algorithms.d3po", "D3POConfig", "d3po"),
    "prdp": ("mmalign.algorithms.prdp", "PRDPConfig", "prdp"),
    "flow-dpo": ("mmalign.algorithms.flow_dpo", "FlowDPOConfig", "flow_dpo"),
    "flow-rwr": ("mmalign.algorithms.flow_rwr", "FlowRWRConfig", "flow_rwr"),
}
PREFERENCE_TRAINERS = ("d3po", "flow-dpo")


def command_train(args: argparse.Namespace) -> int:
    import importlib

    from .config import load_config

    module_name, config_name, function_name = TRAINERS[args.method]
    if args.prefs is not None:
        if args.method not in PREFERENCE_TRAINERS:
            raise InvalidInputError(f"--prefs: only D3PO and Flow-DPO train on labelled pairs, not {args.method}. "
                                    "Fix: `mmalign train d3po --prefs STORE` (or flow-dpo for a flow model).")
        if not Path(args.prefs).is_file():
            raise InvalidInputError(f"--prefs: {args.prefs!r} does not exist; pass a preference store (.db) or a "
                                    "JSONL/Parquet file of pairs (the demo's store is printed under its buttons).")
        args.overrides = [*args.overrides, f"preferences={args.prefs}"]
    module = importlib.import_module(module_name)
    config = load_config(getattr(module, config_name), args.config, args.overrides)
    history = getattr(module, function_name)(config, resume=args.resume)
    output_dir = Path(config.output_dir)
    summary = {"method": args.method, "output_dir": str(output_dir), "iterations": len(history),
               "log": str(output_dir / "log.jsonl"), "curves": str(output_dir / "curves.png"),
               "final": {k: _number(v) if isinstance(v, float) else v for k, v in (history[-1] if history else {}).items()}}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        final = summary["final"]
        scores = ", ".join(f"{k} {v:.3f}" for k, v in final.items() if k in ("shapes_eval", "accuracy", "eval_proxy") and v is not None)
        print(f"{args.method}: {len(history)} iterations in {output_dir}" + (f"; held-out {scores}" if scores else ""))
        print(f"log {summary['log']}, curves {summary['curves']}")
    return 0


def _format(value: float | None) -> str:
    return "nan" if value is None else f"{value:.4f}"


def build_parser() -> argparse.ArgumentParser:
    from .cli_flow import add_nrg_parser, add_size_arguments
    from .cli_serve import add_serving_parsers
    from .models import SHIPPED_MODELS

    def own(setting: str) -> str:
        return ", ".join(f"{name} {getattr(model, setting):g}" for name, model in SHIPPED_MODELS.items())

    parser = argparse.ArgumentParser(prog="mmalign", description="Align generative models with rewards.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    rewards = commands.add_parser("rewards", help="list the rewards and their cards")
    rewards.add_argument("--json", action="store_true", help="print the cards as JSON")
    rewards.set_defaults(run=command_rewards)

    score = commands.add_parser("score", help="score images with one or more rewards")
    score.add_argument("images", nargs="+", type=Path, help="image files (PNG, JPEG, ...)")
    score.add_argument(
        "--reward", action="append", required=True, metavar="NAME[=WEIGHT]",
        help="a reward name (see `mmalign rewards`), optionally weighted; repeat to combine",
    )
    score.add_argument("--prompt", default=None, help="the prompt the images are scored against")
    score.add_argument("--batch-size", type=int, default=8)
    score.add_argument("--device", default="cpu", help="torch device for model rewards (cpu, cuda, ...)")
    score.add_argument("--output-dir", default=str(DEFAULT_OUTPUT_ROOT / "score"), help="where scores.json goes")
    score.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    score.set_defaults(run=command_score)
    sampling = argparse.ArgumentParser(add_help=False)
    sampling.add_argument("--model", default="shapes-sd",
                          help=f"a shipped model ({', '.join(SHIPPED_MODELS)}), a pipeline folder or a hub id")
    sampling.add_argument("--seed", type=int, default=0)
    sampling.add_argument("--num-inference-steps", type=int, default=None,
                          help=f"default: a shipped model's own ({own('num_inference_steps')}), else the pipeline's")
    sampling.add_argument("--guidance-scale", type=float, default=None,
                          help=f"default: a shipped model's own ({own('guidance_scale')}), else the pipeline's")
    sampling.add_argument("--device", default="cpu")
    sampling.add_argument("--lora", default=None, metavar="DIR", help="apply the LoRA a fine-tune saved in DIR")
    sampling.add_argument("--json", action="store_true", help="print machine-readable results on stdout")

    generate = commands.add_parser("generate", parents=[sampling], help="sample images from a model into a PNG grid")
    generate.add_argument("--prompt", required=True)
    generate.add_argument("-n", "--num-images", type=int, default=8)
    generate.add_argument("--output-dir", default=str(DEFAULT_OUTPUT_ROOT / "generate"))
    add_size_arguments(generate)
    generate.set_defaults(run=command_generate)

    evaluate = commands.add_parser("eval", parents=[sampling], help="ShapesEval of a model, with a proxy reward beside it")
    evaluate.add_argument("--split", choices=["train", "heldout"], default="heldout")
    evaluate.add_argument("--per-category", type=int, default=16, help="prompts sampled per category")
    evaluate.add_argument("--reward", default="shapes-clip", help="the proxy reward reported beside ShapesEval ('' for none)")
    evaluate.add_argument("--output-dir", default=str(DEFAULT_OUTPUT_ROOT / "eval"))
    evaluate.set_defaults(run=command_eval)

    optimise = commands.add_parser("reno", parents=[sampling], help="ReNO: optimise the initial noise against rewards")
    optimise.set_defaults(model="shapes-turbo")
    optimise.add_argument("--prompt", action="append", required=True, help="repeat for several prompts, run as a batch")
    optimise.add_argument("--reward", action="append", metavar="NAME[=WEIGHT]",
                          help="a differentiable reward, optionally weighted; repeat to combine (default: shapes-clip)")
    optimise.add_argument("--iterations", type=int, default=50)
    optimise.add_argument("--learning-rate", type=float, default=5.0)
    optimise.add_argument("--early-stopping-patience", type=int, default=None)
    optimise.add_argument("--gradient-checkpointing", action="store_true", help="less memory, more time")
    optimise.add_argument("--output-dir", default=str(DEFAULT_OUTPUT_ROOT / "reno"))
    optimise.set_defaults(run=command_reno)
    add_nrg_parser(commands, sampling)

    train = commands.add_parser(
        "train", help="fine-tune a model (RAFT, D3PO, PRDP, Flow-DPO, Flow-RWR); runs under `accelerate launch` too",
        description="Fine-tune with a method's config: defaults, then --config FILE (YAML), then key=value overrides. "
                    "Every key is a field of the method's config class (mmalign.algorithms.RAFTConfig, D3POConfig, "
                    "PRDPConfig, FlowDPOConfig, FlowRWRConfig).",
    )
    train.add_argument("method", choices=sorted(TRAINERS))
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. learning_rate=1e-4 use_lora=false")
    train.add_argument("--config", default=None, help="a YAML file of config keys")
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    train.add_argument("--prefs", default=None, metavar="STORE",
                       help="D3PO and Flow-DPO: train on the pairs labelled in this store (.db) or JSONL/Parquet file "
                            "(the same as preferences=STORE)")
    train.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    train.set_defaults(run=command_train)
    add_serving_parsers(commands)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:  # argparse stops collecting KEY=VALUE overrides at the first option; the rest come here
        args.overrides = [*args.overrides, *extra]
    try:
        return args.run(args)
    except (MMAlignError, OSError) as error:  # bad input, or a file the user named that cannot be used
        print(f"mmalign {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmalign {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
