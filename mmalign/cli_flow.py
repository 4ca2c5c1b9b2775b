"""The command line's video and flow-guidance parts: ``mmalign generate`` for video models (GIF or
MP4 files and a frame strip) and ``mmalign nrg`` (Flow-NRG against its unguided baseline)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import InvalidInputError

VIDEO_FORMATS = ("gif", "mp4")


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--height", type=int, default=None, help="default: a shipped model's own, else the pipeline's")
    parser.add_argument("--width", type=int, default=None, help="default: a shipped model's own, else the pipeline's")
    parser.add_argument("--num-frames", type=int, default=None, help="video models only; default: the model's own")
    parser.add_argument("--format", choices=VIDEO_FORMATS, default="gif",
                        help="video file format (mp4 needs pip install 'mmalign[video]')")


def size_kwargs(args: argparse.Namespace) -> dict:
    """The sizes given on the command line; the caller checks the frame count against its pipeline
    (:func:`.sampling.flow.check_num_frames`, which also refuses one for an image model)."""
    chosen = {key: getattr(args, key) for key in ("height", "width", "num_frames") if getattr(args, key) is not None}
    for key, value in chosen.items():
        if value < 1:
            raise InvalidInputError(f"--{key.replace('_', '-')}: must be at least 1, got {value}.")
    return chosen


def write_videos(videos, output_dir: Path, fmt: str, stem: str = "") -> list[str]:
    """Each ``[T,3,H,W]`` video as ``NNN.<fmt>`` and ``NNN-frames.png``; returns the video paths."""
    from .video_files import frame_strip, write_video

    paths = []
    for index, video in enumerate(videos):
        name = f"{stem}{index:03d}"
        paths.append(str(write_video(video, output_dir / f"{name}.{fmt}")))
        frame_strip(video, output_dir / f"{name}-frames.png")
    return paths


def generate_video(args: argparse.Namespace, output_dir: Path, pipeline, sampling: dict) -> dict:
    """``mmalign generate`` of a video model; returns the report."""
    import torch

    from .sampling.flow import check_num_frames
    from .shapes.evaluation import generate_videos
    from .video_files import frame_strip

    call = {**sampling, **size_kwargs(args)}  # a shipped model's own size, unless set
    check_num_frames(pipeline, call.get("num_frames"), "--num-frames")
    videos = generate_videos(pipeline, [args.prompt] * args.num_images, seed=args.seed, **call)
    paths = write_videos(videos, output_dir, args.format)
    strip = frame_strip(torch.cat(list(videos), dim=2), output_dir / "frames.png")  # one row of frames a video
    return {"model": args.model, "prompt": args.prompt, "seed": args.seed, "frames": str(strip), "videos": paths}


def command_nrg(args: argparse.Namespace) -> int:
    import torch

    from .algorithms.flow_nrg import nrg_sample, reward_heads
    from .algorithms.latent_reward import LatentRewardModel
    from .cli import open_model, print_table, sampling_kwargs
    from .rewards import load_reward
    from .sampling import flow

    weights = parse_head_weights(args.weights)
    if (args.reward is None) == (args.latent_reward is None):
        raise InvalidInputError("--reward/--latent-reward: give exactly one: a differentiable reward name, or the "
                                "folder of a latent reward (train_latent_reward's save_pretrained).")
    output_dir, pipeline = open_model(args)
    video = flow.is_video(pipeline)
    guide = (LatentRewardModel.from_pretrained(args.latent_reward).to(args.device) if args.latent_reward
             else load_reward(args.reward, device=args.device))
    scorer = load_reward(args.score_with or args.reward or ("shapes-video-reward" if video else "shapes-clip"), device=args.device)
    chosen = sampling_kwargs(args)
    size = size_kwargs(args)
    sampling = {**chosen, **size}
    flow.check_num_frames(pipeline, sampling.get("num_frames"), "--num-frames")
    steps, scale = sampling.pop("num_inference_steps", None), sampling.pop("guidance_scale", None)  # None: the pipeline's
    runs = {}
    for label, used in (("base", dict.fromkeys(weights, 0.0)), ("nrg", weights)):
        result = nrg_sample(pipeline, args.prompt, guide, used, steps, scale, torch.Generator().manual_seed(args.seed),
                            progress=label == "nrg", **sampling)
        with torch.no_grad():
            heads = reward_heads(scorer(result.samples.to(args.device), args.prompt))
        runs[label] = {"samples": result.samples, "heads": {h: v.float().cpu().tolist() for h, v in heads.items()}}
    report = {"model": args.model, "prompts": args.prompt, "seed": args.seed, "head_weights": weights,
              "guide": args.latent_reward or args.reward, "scored_by": scorer.name, **chosen, **size}
    for label, run in runs.items():
        files = (write_videos(run["samples"], output_dir, args.format, stem=f"{label}-") if video
                 else write_images(run["samples"], output_dir, label))
        report[label] = {"files": files, "heads": run["heads"], "oracle": oracle_verdicts(run["samples"], args.prompt, video)}
    (output_dir / "nrg.json").write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        heads = list(runs["base"]["heads"])
        rows = [[prompt, *(f"{runs['base']['heads'][h][i]:.3f} → {runs['nrg']['heads'][h][i]:.3f}" for h in heads),
                 f"{report['base']['oracle'][i]} → {report['nrg']['oracle'][i]}"] for i, prompt in enumerate(args.prompt)]
        print_table(["prompt", *heads, "oracle"], rows)
        print(f"\nwrote {output_dir / 'nrg.json'} and the samples beside it", file=sys.stderr)
    return 0


def parse_head_weights(items: list[str] | None) -> dict[str, float]:
    """``["VQ=1,MQ=0.5", "TA=2"]`` → ``{"VQ": 1.0, "MQ": 0.5, "TA": 2.0}``."""
    weights = {}
    for item in (part for entry in items or [] for part in entry.split(",") if part.strip()):
        head, _, value = item.partition("=")
        try:
            weights[head.strip()] = float(value)
        except ValueError:
            raise InvalidInputError(f"--weights: {item!r} is not HEAD=WEIGHT (e.g. VQ=1,MQ=1,TA=1).") from None
    if not weights:
        raise InvalidInputError("--weights: give at least one HEAD=WEIGHT, e.g. --weights VQ=1,MQ=1,TA=1 "
                                "(a reward without heads has one, reward=1).")
    return weights


def write_images(images, output_dir: Path, label: str) -> list[str]:
    from torchvision.utils import save_image

    paths = [output_dir / f"{label}-{index:03d}.png" for index in range(len(images))]
    for image, path in zip(images, paths):
        save_image(image, path)
    return [str(path) for path in paths]


def oracle_verdicts(samples, prompts: list[str], video: bool) -> list[str]:
    """"pass"/"fail" per sample from the shapes world's oracle, "not judged" outside its grammar."""
    from .shapes.oracle import ShapesEval
    from .shapes.video_oracle import ShapesVideoEval

    oracle = ShapesVideoEval() if video else ShapesEval()
    verdicts = [oracle.judge(sample, prompt).passed for sample, prompt in zip(samples, prompts)]
    return ["not judged" if v is None else ("pass" if v else "fail") for v in verdicts]


def add_nrg_parser(commands, sampling: argparse.ArgumentParser) -> None:
    nrg = commands.add_parser(
        "nrg", parents=[sampling], help="Flow-NRG: reward-guided sampling of a flow model, beside the unguided samples",
        description="Sample a rectified-flow model (SD3, Flux, Wan classes) with Flow-NRG, ṽ = v − σ/(1−σ)·∇(Σ w_h r_h), "
                    "and without guidance from the same seed; writes both, their reward heads and the oracle's verdicts.")
    nrg.set_defaults(model="shapes-video", run=command_nrg)
    nrg.add_argument("--prompt", action="append", required=True, help="repeat for several prompts, run as a batch")
    nrg.add_argument("--reward", default=None, help="a differentiable reward guiding through the decoded estimate")
    nrg.add_argument("--latent-reward", default=None, metavar="DIR", help="a latent reward model's folder instead")
    nrg.add_argument("--weights", action="append", metavar="HEAD=W[,HEAD=W]", help="per-head guidance weights, e.g. VQ=1,MQ=1,TA=1")
    nrg.add_argument("--score-with", default=None, help="the reward that scores both runs (default: the guiding reward, "
                                                         "else the world's proxy)")
    add_size_arguments(nrg)
    nrg.add_argument("--output-dir", default="mmalign_outputs/nrg")
