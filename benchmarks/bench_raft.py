"""RAFT on the shapes world: what it buys (ShapesEval for images, verifier accuracy for text) and what
the shared fine-tune loop costs.

- ``images``: held-out ShapesEval of shapes-sd before and after RAFT with ``shapes-clip`` as the
  reward (configs/raft/shapes-sd.yaml), per category, with the mean shapes-clip reward beside it.
  The oracle judges; shapes-clip is only what RAFT ranks by.
- ``text``: held-out exact-answer accuracy of shapes-lm before and after RAFT ranked by (a) the
  verifier and (b) the learned reward model shapes-lm-rm, with the RM's mean score beside it; an RM
  that rises while accuracy falls has been hacked.
- ``overhead``: one RAFT iteration through ``finetune()`` (accelerate, checkpoint, log) divided by
  a hand-written loop of the same maths on the same modules, timed interleaved.

    python benchmarks/bench_raft.py                 # everything, on the CPU
    python benchmarks/bench_raft.py --only images
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from bench_reno import print_table
from bench_rewards import interleaved_medians
from mmalign.algorithms.denoising import denoiser_conditioning, denoising_loss, uniform_timesteps
from mmalign.algorithms.finetune import finetune
from mmalign.algorithms.raft import RAFTConfig, raft, raft_method
from mmalign.config import load_config
from mmalign.models import load_causal_lm, load_pipeline
from mmalign.rewards import load_reward
from mmalign.sampling.pipelines import decode_latents, initial_noise
from mmalign.sampling.text import generate_completions
from mmalign.shapes.arithmetic import arithmetic_prompts
from mmalign.shapes.evaluation import evaluate_images, evaluation_prompts, generate_images

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "raft"


def evaluate_pipeline(pipeline, reward, prompts, config: RAFTConfig):
    """ShapesEval of ``pipeline`` as users sample it: the model's own steps and guidance."""
    from mmalign.models import sampling_defaults

    return evaluate_images(generate_images(pipeline, prompts, seed=config.seed, **sampling_defaults(config.model)), prompts, reward)


def images(args) -> dict:
    output_dir = tempfile.mkdtemp(prefix="images-", dir=args.output_dir)
    config = load_config(RAFTConfig, CONFIGS / "shapes-sd.yaml", [f"output_dir={output_dir}", "eval_every=0", "report_to=none"])
    reward = load_reward(config.reward)
    prompts = evaluation_prompts("heldout", args.per_category, config.seed)
    base = evaluate_pipeline(load_pipeline(config.model), reward, prompts, config)
    method = raft_method(config)
    start = time.perf_counter()
    history = finetune(method)
    minutes = (time.perf_counter() - start) / 60
    tuned = evaluate_pipeline(method.pipeline, reward, prompts, config)
    print(f"\nRAFT on {config.model}, reward {config.reward}: {config.num_iterations} iterations of "
          f"{config.prompts_per_iteration} prompts x {config.num_samples_per_prompt} samples, {minutes:.1f} min; "
          f"held-out ShapesEval, {args.per_category} prompts per category")
    return {"minutes": minutes, "config": config.__dict__, "history": history, **gain_table(base, tuned, "RAFT")}


def gain_table(base, tuned, method: str) -> dict:
    """Print ShapesEval per category before and after ``method`` with the proxy's mean beside it,
    flag reward hacking, and return both evaluations."""
    categories = list(base.report.accuracy)
    rows = [[c, f"{base.report.accuracy[c]:.3f}", f"{tuned.report.accuracy[c]:.3f}",
             f"{(tuned.report.accuracy[c] - base.report.accuracy[c]) * 100:+.1f}"] for c in categories]
    gain = tuned.report.overall - base.report.overall
    rows.append(["overall", f"{base.report.overall:.3f}", f"{tuned.report.overall:.3f}", f"{gain * 100:+.1f}"])
    rows.append(["shapes-clip (mean)", f"{base.proxy_mean:.4f}", f"{tuned.proxy_mean:.4f}", f"{tuned.proxy_mean - base.proxy_mean:+.4f}"])
    print_table(["category", "base", method, "gain (points)"], rows)
    if gain < 0 < tuned.proxy_mean - base.proxy_mean:
        print("the proxy rose while the oracle fell: reward hacking")
    return {name: {"shapes_eval": r.report.accuracy, "overall": r.report.overall, "shapes_clip": r.proxy_mean}
            for name, r in (("base", base), (method.lower(), tuned))}


def text_scores(model, tokenizer, prompts: list[str], verifier, reward_model, seed: int) -> dict:
    """Held-out exact-answer accuracy (sampled at temperature 1, and greedy) and the RM's mean score."""
    sampled = generate_completions(model, tokenizer, prompts, temperature=1.0, seed=seed)
    greedy = generate_completions(model, tokenizer, prompts, temperature=0.0)
    return {"accuracy": float(verifier(sampled, prompts).reward.mean()),
            "accuracy_greedy": float(verifier(greedy, prompts).reward.mean()),
            "rm_score": float(reward_model(sampled, prompts).reward.mean())}


def text(args) -> dict:
    verifier, reward_model = load_reward("shapes-arithmetic-verifier"), load_reward("shapes-lm-rm")
    prompts = arithmetic_prompts("heldout", args.text_prompts, seed=1)
    results, minutes = {"base": text_scores(*load_causal_lm("shapes-lm"), prompts, verifier, reward_model, 0)}, {}
    for name in ("verifier", "rm"):
        output_dir = tempfile.mkdtemp(prefix=f"text-{name}-", dir=args.output_dir)
        config = load_config(RAFTConfig, CONFIGS / f"shapes-lm-{name}.yaml", [f"output_dir={output_dir}", "eval_every=0"])
        method = raft_method(config)
        start = time.perf_counter()
        finetune(method)
        minutes[name] = (time.perf_counter() - start) / 60
        results[f"RAFT ({config.reward})"] = text_scores(method.model, method.tokenizer, prompts, verifier, reward_model, 0)
    print(f"\nRAFT on shapes-lm, {args.text_prompts} held-out problems (sampled at temperature 1 unless greedy); "
          f"minutes: {', '.join(f'{k} {v:.1f}' for k, v in minutes.items())}")
    rows = [[metric, *(f"{r[metric]:.3f}" for r in results.values())] for metric in ("accuracy", "accuracy_greedy", "rm_score")]
    print_table(["metric", *results], rows)
    for name, r in results.items():
        if r["rm_score"] > results["base"]["rm_score"] and r["accuracy"] < results["base"]["accuracy"]:
            print(f"{name}: the RM rose while accuracy fell: the RM was hacked")
    return {"minutes": minutes, **results}


def hand_written_iteration(pipeline, model, optimizer, reward, prompts, config: RAFTConfig, sampling: dict, seed: int):
    """One RAFT iteration written out: sample K per prompt, score, keep each prompt's best, one pass
    of the denoising loss over the kept latents. The reference for the overhead ratio."""
    generator = torch.Generator().manual_seed(seed)
    k = config.num_samples_per_prompt
    repeated = [p for p in prompts for _ in range(k)]
    with torch.no_grad():
        latents = pipeline(repeated, latents=initial_noise(pipeline, len(repeated), generator), output_type="latent", **sampling).images
        scores = reward(decode_latents(pipeline, latents), repeated).reward.view(len(prompts), k)
    best = scores.argmax(1) + torch.arange(len(prompts)) * k
    x0, conditioning = latents[best], denoiser_conditioning(pipeline, prompts)
    for start in range(0, len(prompts), config.train_batch_size):
        batch = slice(start, start + config.train_batch_size)
        timesteps = uniform_timesteps(pipeline.scheduler, x0[batch].shape[0], generator)
        noise = torch.randn(x0[batch].shape, generator=generator)
        loss = denoising_loss(model, pipeline.scheduler, x0[batch], noise, timesteps, {k: v[batch] for k, v in conditioning.items()})
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()


def overhead(args) -> dict:
    workdir = Path(tempfile.mkdtemp())
    config = load_config(RAFTConfig, CONFIGS / "shapes-sd.yaml", [f"output_dir={workdir}", "eval_every=0", "num_iterations=1",
                                                                "num_epochs=1", "prompts_per_iteration=16", "report_to=none"])
    method = raft_method(config)
    model = method.build(torch.device("cpu"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    reward = load_reward(config.reward)
    prompts = evaluation_prompts("train", 3, 0)[: config.prompts_per_iteration]
    sampling = method.sampling

    def through_mmalign():
        # one iteration through finetune(), start to end: loading the model and reward, accelerate,
        # selection, the checkpoint, the JSONL log and plot, the LoRA save
        raft(RAFTConfig(**{**config.__dict__, "output_dir": tempfile.mkdtemp(dir=workdir)}))

    timings = interleaved_medians({
        "hand-written loop": lambda: hand_written_iteration(method.pipeline, model, optimizer, reward, prompts, config, sampling, 0),
        "mmalign raft()": through_mmalign,
    }, repeats=args.repeats)
    print(f"\nRAFT iteration overhead, {config.model}, {config.prompts_per_iteration} prompts x {config.num_samples_per_prompt}, "
          f"medians of {args.repeats}")
    return ratio_table(timings, "s/iteration")


def ratio_table(timings: dict[str, float], unit: str, base: str = "hand-written loop") -> dict[str, float]:
    """Print each path's median time and its ratio to ``base``'s; returns the timings."""
    print_table(["path", unit, "ratio"], [[name, f"{t:.2f}", f"{t / timings[base]:.3f}"] for name, t in timings.items()])
    return timings


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["images", "text", "overhead"])
    parser.add_argument("--per-category", type=int, default=16)
    parser.add_argument("--text-prompts", type=int, default=512, help="held-out arithmetic problems")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output-dir", default=str(Path(tempfile.gettempdir()) / "mmalign-bench-raft"))
    parser.add_argument("--output", default="benchmarks/results/raft.json")
    args = parser.parse_args()
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    sections = {"images": images, "text": text, "overhead": overhead}
    results = {name: run(args) for name, run in sections.items() if args.only in (None, name)}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
