"""Flow-DPO, Flow-RWR and Flow-NRG on the shapes video world, and what the LoRA-disabled reference saves.

- ``quality``: held-out video ShapesEval of shapes-video, per head (object, direction, smoothness)
  and overall, before and after Flow-DPO, Flow-RWR and SFT on each group's winner (Flow-RWR with
  ``weighting=best``), all online against shapes-video-reward, whose mean (and per head) stands
  beside the oracle. The oracle judges; the proxy is only what the methods learn from.
- ``beta``: VideoAlign's ablation on the shapes world: Flow-DPO with a constant β against the
  derived β(1 − σ)². Does the time-dependent β raise the proxy while text alignment (the oracle's
  object and direction heads) falls?
- ``nrg``: Flow-NRG on held-out prompts under several VQ:MQ:TA weightings (VideoAlign's Table 5),
  guided by shapes-video-reward (or ``--nrg-reward``) through the decoded one-step estimate: the
  oracle's heads and the proxy's heads for each.
- ``agreement``: how well each proxy head ranks the base's held-out clips as the oracle does: the
  AUROC of the head's score for each oracle head's pass (0.5 is chance), the chance that a passing
  clip outscores a failing one, over all pairs and over pairs of one caption (the pairs an online
  method's best-against-worst sees). With VQ from shapes-object (the default) and from shapes-clip.
  A method can only climb towards the oracle along a head above 0.5.
- ``paired``: a saved fine-tune (``--lora``, a run's ``output_dir``) against the base on the same
  held-out clips from each of ``--seeds``: the oracle per head and overall, clips gained and lost,
  and the exact McNemar test on the clips that changed, over all seeds together.
- ``memory``: peak resident memory of one Flow-DPO step on a Wan-2.1-1.3B-sized transformer (random
  weights) whose reference is the same model with its LoRA disabled, divided by the same step with
  a full frozen copy as the reference; each in its own process, side by side.

    python benchmarks/bench_flow.py                  # everything, on the CPU (about an hour)
    python benchmarks/bench_flow.py --only quality beta [--set num_iterations=15]
    python benchmarks/bench_flow.py --only quality --method flow-dpo sft-winners
    python benchmarks/bench_flow.py --only agreement --repeats 8
    python benchmarks/bench_flow.py --only paired --lora RUN_DIR --seeds 0 1 2 --repeats 8
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from bench_d3po_prdp import reference_memory, run_sections
from bench_reno import print_table
from mmalign.algorithms.finetune import finetune
from mmalign.algorithms.flow_dpo import FlowDPO, FlowDPOConfig
from mmalign.algorithms.flow_nrg import nrg_sample
from mmalign.algorithms.flow_rwr import FlowRWR, FlowRWRConfig
from mmalign.config import load_config
from mmalign.models import load_lora, load_pipeline, sampling_defaults
from mmalign.rewards import load_reward
from mmalign.shapes.evaluation import generate_videos
from mmalign.shapes.video import motion_prompts_for
from mmalign.shapes.video_oracle import HEADS, ShapesVideoEval

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RUNS = {  # name: (method, config class, config file, overrides)
    "flow-dpo": (FlowDPO, FlowDPOConfig, "flow-dpo", []),
    "flow-rwr": (FlowRWR, FlowRWRConfig, "flow-rwr", []),
    "sft-winners": (FlowRWR, FlowRWRConfig, "flow-rwr", ["weighting=best"]),
    "flow-dpo-time-beta": (FlowDPO, FlowDPOConfig, "flow-dpo", ["beta_schedule=time"]),
}
NRG_WEIGHTINGS = {"0:0:1": (0, 0, 1), "0.1:0.1:0.8": (0.1, 0.1, 0.8), "0.5:0.5:0": (0.5, 0.5, 0), "1:1:1": (1, 1, 1)}


def heldout_prompts(repeats: int) -> list[str]:
    return [prompt.text for prompt in motion_prompts_for("heldout")] * repeats


def judge(videos, prompts, proxy) -> dict:
    """Oracle accuracy per head and overall, and the proxy's mean per head and total."""
    report = ShapesVideoEval().evaluate(list(videos), prompts)
    with torch.no_grad():
        scored = proxy(videos, prompts)
    return {"oracle": report.accuracy, "proxy": float(scored.reward.nanmean()),
            "proxy_heads": {h: float(v.nanmean()) for h, v in scored.heads.items()}}


def evaluate(pipeline, prompts, proxy, seed: int) -> dict:
    return judge(generate_videos(pipeline, prompts, seed=seed, **sampling_defaults("shapes-video")), prompts, proxy)


def comparison_table(results: dict, title: str) -> None:
    print(f"\n{title}")
    names = list(results)
    rows = [[head, *(f"{results[n]['oracle'][head]:.3f}" for n in names)] for head in (*HEADS, "overall")]
    rows.append(["proxy (mean)", *(f"{results[n]['proxy']:.3f}" for n in names)])
    for head in results[names[0]]["proxy_heads"]:
        rows.append([f"proxy {head}", *(f"{results[n]['proxy_heads'][head]:.3f}" for n in names)])
    print_table(["held-out", *names], rows)


FINISHED: dict[str, dict] = {}  # runs made in this invocation: `beta` reuses `quality`'s Flow-DPO and base


def train_runs(args, names: list[str]) -> dict:
    proxy = load_reward("shapes-video-reward")
    prompts = heldout_prompts(args.repeats)
    if "base" not in FINISHED:
        FINISHED["base"] = evaluate(load_pipeline("shapes-video"), prompts, proxy, args.seed)
    results = {"base": FINISHED["base"]}
    for name in names:
        if name in FINISHED:
            results[name] = FINISHED[name]
            continue
        method_class, config_class, folder, overrides = RUNS[name]
        output_dir = tempfile.mkdtemp(prefix=f"{name}-", dir=args.output_dir)
        overrides = [*args.set, *overrides]
        config = load_config(config_class, CONFIGS / folder / "shapes-video.yaml",
                             [f"output_dir={output_dir}", "report_to=none", "eval_every=0", *overrides])
        method = method_class(config)
        history = finetune(method)
        results[name] = {**evaluate(method.pipeline, prompts, proxy, args.seed),
                         "minutes": sum(row["train_seconds"] for row in history) / 60, "overrides": overrides,
                         "history": history}
        FINISHED[name] = results[name]
        print(f"{name}: {config.num_iterations} iterations in {results[name]['minutes']:.1f} training minutes")
    return results


QUALITY_RUNS = ["flow-dpo", "flow-rwr", "sft-winners"]


def quality(args) -> dict:
    results = train_runs(args, args.method or QUALITY_RUNS)
    comparison_table(results, f"Held-out video ShapesEval of shapes-video ({len(heldout_prompts(args.repeats))} clips), "
                              "online against shapes-video-reward")
    return results


def beta(args) -> dict:
    results = train_runs(args, ["flow-dpo", "flow-dpo-time-beta"])
    comparison_table(results, "Flow-DPO: constant β against β(1 − σ)² (VideoAlign's ablation)")
    constant, timed = results["flow-dpo"], results["flow-dpo-time-beta"]
    alignment = {h: timed["oracle"][h] - constant["oracle"][h] for h in ("object", "direction")}
    hacked = timed["proxy"] > constant["proxy"] and all(v < 0 for v in alignment.values())
    print(f"β(1−σ)² against constant: proxy {timed['proxy'] - constant['proxy']:+.3f}, object "
          f"{alignment['object'] * 100:+.1f} points, direction {alignment['direction'] * 100:+.1f} points: "
          + ("the paper's finding holds here (proxy up, text alignment down)" if hacked else "the paper's finding does not reproduce here"))
    return {**results, "reproduces_paper": hacked}


def nrg(args) -> dict:
    pipeline = load_pipeline("shapes-video")
    proxy = load_reward(args.nrg_reward)
    prompts = heldout_prompts(args.repeats)
    sampling = sampling_defaults("shapes-video")
    steps, scale = sampling.pop("num_inference_steps"), sampling.pop("guidance_scale")
    results = {}
    for name, (vq, mq, ta) in {"unguided": (0, 0, 0), **NRG_WEIGHTINGS}.items():
        weights = {"VQ": vq * args.nrg_scale, "MQ": mq * args.nrg_scale, "TA": ta * args.nrg_scale}
        videos = []
        started = time.perf_counter()
        for start in range(0, len(prompts), 17):
            batch = prompts[start : start + 17]
            videos.append(nrg_sample(pipeline, batch, proxy, weights, steps, scale,
                                     torch.Generator().manual_seed(args.seed + start), **sampling).samples)
        results[name] = {**judge(torch.cat(videos), prompts, proxy), "guide": proxy.name, "weights": weights,
                         "seconds": time.perf_counter() - started}
    comparison_table(results, f"Flow-NRG on shapes-video, VQ:MQ:TA weightings × {args.nrg_scale:g}, guided by "
                              f"{proxy.name} ({len(prompts)} held-out clips)")
    return results


MEMORY_SETUP = """
# Wan 2.1 T2V-1.3B's transformer config (1.4B parameters), VideoAlign's LoRA
from diffusers import WanTransformer3DModel
model = WanTransformer3DModel(num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                              text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30)
lora = dict(rank=64, alpha=128)
latents, text = torch.randn(2, 16, 3, 16, 16), torch.randn(2, 64, 4096)  # a pair: winner and loser, 9 frames of 128 px
timestep = torch.tensor([500.0, 500.0])
forward = lambda module: module(latents, timestep, text).sample
"""


def auroc(scores: torch.Tensor, passed: list[bool], groups: list[int] | None = None) -> float:
    """The chance that a passing clip scores above a failing one, ties counting half (Mann–Whitney U
    over its maximum); with ``groups``, over pairs within one group only. NaN without such pairs."""
    passed = torch.tensor(passed)
    groups = torch.tensor(groups) if groups is not None else torch.zeros(len(passed), dtype=torch.long)
    positives, negatives = scores[passed], scores[~passed]
    above = (positives[:, None] > negatives[None]).float() + 0.5 * (positives[:, None] == negatives[None]).float()
    pairs = groups[passed][:, None] == groups[~passed][None]
    return float(above[pairs].mean()) if pairs.any() else float("nan")


AGREEMENT_PROXIES = {"": "shapes-video-reward", " (shapes-clip VQ)": "shapes-video-reward:shapes-clip"}


def agreement(args) -> dict:
    prompts = heldout_prompts(args.repeats)
    videos = generate_videos(load_pipeline("shapes-video"), prompts, seed=args.seed,
                             **sampling_defaults("shapes-video"))
    oracle = ShapesVideoEval()
    verdicts = [oracle.judge(video, prompt) for video, prompt in zip(videos, prompts)]
    passed = {**{head: [v.heads[head] for v in verdicts] for head in HEADS}, "overall": [v.passed for v in verdicts]}
    captions = [prompts.index(prompt) for prompt in prompts]
    scores = {}
    for suffix, proxy in AGREEMENT_PROXIES.items():
        with torch.no_grad():
            scored = load_reward(proxy)(videos, prompts)
        for name, score in {**scored.heads, "sum": scored.reward}.items():
            if suffix and name in ("MQ", "TA"):
                continue  # the frame reward changes VQ only
            scores[name + suffix] = score.float()
    pooled = {name: {head: auroc(score, labels) for head, labels in passed.items()} for name, score in scores.items()}
    within = {name: {head: auroc(score, labels, captions) for head, labels in passed.items()}
              for name, score in scores.items()}
    pass_rate = {head: sum(labels) / len(labels) for head, labels in passed.items()}
    print(f"\nAUROC of each proxy head for each oracle head's pass, base shapes-video, {len(prompts)} held-out clips "
          f"(pass rates: {', '.join(f'{h} {rate:.3f}' for h, rate in pass_rate.items())}); 'within caption' pairs "
          "only clips of one caption, as an online method's best-against-worst does")
    print_table(["proxy", *passed, "overall, within caption"],
                [[name, *(f"{a:.3f}" for a in row.values()), f"{within[name]['overall']:.3f}"]
                 for name, row in pooled.items()])
    return {"clips": len(prompts), "pass_rate": pass_rate, "auroc": pooled, "auroc_within_caption": within}


def mcnemar_p(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: under no effect each changed clip is a gain or a loss with
    chance 1/2, so the smaller count is Binomial(gained + lost, 1/2); twice its lower tail, at most 1."""
    changed = gained + lost
    tail = sum(math.comb(changed, k) for k in range(min(gained, lost) + 1)) / 2 ** changed
    return min(1.0, 2 * tail)


def paired(args) -> dict:
    proxy = load_reward("shapes-video-reward")
    prompts = heldout_prompts(args.repeats)
    pipelines = {"base": load_pipeline("shapes-video")}
    for directory in args.lora:
        pipelines[directory] = load_pipeline("shapes-video")
        load_lora(pipelines[directory], directory, "shapes-video")
    oracle = ShapesVideoEval()
    by_seed = {name: {} for name in pipelines}
    for seed in args.seeds:
        for name, pipeline in pipelines.items():
            videos = generate_videos(pipeline, prompts, seed=seed, **sampling_defaults("shapes-video"))
            by_seed[name][str(seed)] = {**judge(videos, prompts, proxy), "passed": [
                bool(oracle.judge(video, prompt).passed) for video, prompt in zip(videos, prompts)]}
            print(f"seed {seed}, {name}: overall {by_seed[name][str(seed)]['oracle']['overall']:.3f}", flush=True)
    base = [passed for seed in by_seed["base"].values() for passed in seed["passed"]]
    results = {"clips_per_seed": len(prompts), "seeds": args.seeds, "base": by_seed.pop("base"), "runs": {}}
    rows = [["base", *(f"{s['oracle']['overall']:.3f}" for s in results["base"].values()),
             f"{sum(base) / len(base):.3f}", "", "", ""]]
    for name, seeds in by_seed.items():
        tuned = [passed for seed in seeds.values() for passed in seed["passed"]]
        gained = sum(after and not before for before, after in zip(base, tuned))
        lost = sum(before and not after for before, after in zip(base, tuned))
        pooled = {"base_overall": sum(base) / len(base), "overall": sum(tuned) / len(tuned),
                  "gained": gained, "lost": lost, "mcnemar_p": mcnemar_p(gained, lost)}
        results["runs"][name] = {"seeds": seeds, "pooled": pooled}
        rows.append([name, *(f"{s['oracle']['overall']:.3f}" for s in seeds.values()), f"{pooled['overall']:.3f}",
                     str(gained), str(lost), f"{pooled['mcnemar_p']:.3g}"])
    print(f"\nHeld-out oracle overall of shapes-video, {len(prompts)} clips a seed, the same clips for every model")
    print_table(["model", *(f"seed {s}" for s in args.seeds), "pooled", "gained", "lost", "McNemar p"], rows)
    return results


def memory(args) -> dict:
    return reference_memory(MEMORY_SETUP, "Peak resident memory of one Flow-DPO step, Wan-2.1-1.3B-sized transformer "
                                         "(random weights, fp32), LoRA r64")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=["quality", "beta", "nrg", "agreement", "paired", "memory"],
                        help="run these sections only (one process: beta reuses quality's runs)")
    parser.add_argument("--method", nargs="+", choices=QUALITY_RUNS,
                        help="quality: these runs only (the others keep their earlier results in --output)")
    parser.add_argument("--repeats", type=int, default=4, help="clips per held-out caption (17 captions)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="quality, beta: config overrides for every training run, e.g. num_iterations=15")
    parser.add_argument("--nrg-scale", type=float, default=20.0, help="multiplies every NRG weighting")
    parser.add_argument("--nrg-reward", default="shapes-video-reward",
                        help="nrg: the reward that guides and is reported, e.g. shapes-video-reward:shapes-clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lora", nargs="+", metavar="RUN_DIR", help="paired: the fine-tunes to compare with the base")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="paired: one set of clips per seed")
    parser.add_argument("--output-dir", default=str(Path(tempfile.gettempdir()) / "mmalign-bench-flow"))
    parser.add_argument("--output", default="benchmarks/results/flow.json")
    args = parser.parse_args()
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    sections = {"quality": quality, "beta": beta, "nrg": nrg, "agreement": agreement, "paired": paired,
                "memory": memory}
    if not args.lora:
        if args.only and "paired" in args.only:
            parser.error("--only paired needs --lora RUN_DIR: the output_dir of a shapes-video fine-tune")
        del sections["paired"]
    run_sections(sections, args, args.only, merged=("quality",))


if __name__ == "__main__":
    main()
