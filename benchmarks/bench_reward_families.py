"""Every reward family at tiny size on the CPU: throughput, peak memory, and batch invariance.

Each family is built as the tests build it (its real classes, a tiny config, a checkpoint laid out
as the official release is; ``tests/reward_toys.py``) and measured in a process of its own, so that
one family's memory never counts against another's:

- ``items/s``: batches of 8 scored, median of 5 after a warm-up;
- ``load MiB`` and ``score MiB``: the growth of the process's peak resident memory while building
  and loading (the libraries already imported), then while scoring;
- ``batch-1 vs 8``: the largest |score alone − score in the batch of 8|, which must be float noise.

    python benchmarks/bench_reward_families.py            # writes benchmarks/results/reward_families.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("clip", "hpsv2", "pickscore", "imagereward", "vlm-judge", "videoreward", "remote:clip")
BATCH = 8


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def build(family: str, folder: Path):
    """``(reward, samples, prompts, closer)`` for one family at tiny size."""
    sys.path.insert(0, str(ROOT / "tests"))
    from reward_toys import write_hps_checkpoint, write_imagereward, write_pickscore, write_videoreward_release
    from toys import write_tiny_clip
    from vlm_toys import save_qwen2_vl

    from mmalign.rewards import load_reward

    images = torch.rand(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompts = [f"{n} red circles left of a blue square" for n in range(BATCH)]
    if family in ("clip", "remote:clip", "hpsv2"):
        clip_dir = write_tiny_clip(folder / "clip")
        if family == "hpsv2":
            checkpoint, _ = write_hps_checkpoint(clip_dir, folder / "HPS_v2_compressed.pt")
            return load_reward("hpsv2", checkpoint=str(checkpoint), model_name=f"local-dir:{clip_dir}"), images, prompts, None
        reward = load_reward(f"local-dir:{clip_dir}")
        if family == "clip":
            return reward, images, prompts, None
        from mmalign.rewards.server import RewardServer

        server = RewardServer(reward, port=0).start()
        return load_reward(f"remote:{server.url}", batch_size=BATCH), images, prompts, server.close
    if family == "pickscore":
        model, processor = write_pickscore(folder)
        return load_reward("pickscore", model=model, processor=processor), images, prompts, None
    if family == "imagereward":
        arguments, _ = write_imagereward(folder)
        return load_reward("imagereward", **arguments), images, prompts, None
    if family == "vlm-judge":
        return load_reward(f"vlm-judge:{save_qwen2_vl(folder / 'judge')}"), images, prompts, None
    base, release, _, _ = write_videoreward_release(folder)
    reward = load_reward("videoreward", checkpoint=release, base=base, max_frame_pixels=56 * 56,
                         min_frame_pixels=56 * 56, video_fps=8)
    videos = torch.rand(BATCH, 16, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    return reward, videos, prompts, None


def measure(family: str, repeats: int) -> dict:
    torch.set_num_threads(2)
    import open_clip  # noqa: F401 - the libraries' own import cost is not the model's
    from transformers import BlipVisionModel, CLIPModel, Qwen2VLForConditionalGeneration  # noqa: F401

    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        before = peak_mib()
        reward, samples, prompts, close = build(family, Path(folder))
        loaded = peak_mib()
        times = []
        for round_index in range(repeats + 1):
            start = time.perf_counter()
            batched = reward(samples, prompts).reward
            if round_index:
                times.append(time.perf_counter() - start)
        single = torch.cat([reward(samples[i : i + 1], prompts[i]).reward for i in range(BATCH)])
        scored = peak_mib()
        if close:
            close()
    difference = (batched - single).abs()
    return {"family": family, "items_per_s": BATCH / statistics.median(times), "load_mib": loaded - before,
            "score_mib": scored - loaded, "batch_invariance": float(difference[~difference.isnan()].max()),
            "differentiable": reward.spec.differentiable, "modality": reward.spec.modality}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=FAMILIES, help="measure one family in this process (used internally)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "reward_families.json"))
    args = parser.parse_args()
    if args.family:
        print(json.dumps(measure(args.family, args.repeats)))
        return
    rows = []
    for family in FAMILIES:
        run = subprocess.run([sys.executable, __file__, "--family", family, "--repeats", str(args.repeats)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
    header = f"{'family':<12} {'modality':<8} {'grad':<5} {'items/s':>8} {'load MiB':>9} {'score MiB':>10} {'batch-1 vs 8':>13}"
    print(header, "-" * len(header), sep="\n")
    for row in rows:
        print(f"{row['family']:<12} {row['modality']:<8} {'yes' if row['differentiable'] else 'no':<5} "
              f"{row['items_per_s']:>8.1f} {row['load_mib']:>9.0f} {row['score_mib']:>10.0f} {row['batch_invariance']:>13.1e}")
    Path(args.output).write_text(json.dumps({"batch": BATCH, "device": "cpu", "rows": rows}, indent=2))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
