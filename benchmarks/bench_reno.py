"""ReNO on the shapes world: what it buys (ShapesEval), what it costs (overhead), what it holds (memory).

- ``quality``: held-out ShapesEval of the one-step base, of ReNO (50 iterations) and of best-of-N at
  equal reward evaluations (N = 50), per category, with the mean shapes-clip reward beside each. The
  oracle judges; shapes-clip is only what ReNO and best-of-N optimise.
- ``overhead``: one ReNO iteration through mmalign (the stock pipeline called with autograd on)
  divided by a hand-written loop of the same maths on the same modules, timed interleaved.
- ``memory``: the activations autograd keeps for the backward pass, with and without gradient
  checkpointing (on a GPU, also ``torch.cuda.max_memory_allocated``).

    python benchmarks/bench_reno.py                          # everything, shapes-turbo on the CPU
    python benchmarks/bench_reno.py --only quality --per-category 8
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench_rewards import interleaved_medians
from mmalign.algorithms import ReNOConfig, best_of_n, noise_regularizer, reno
from mmalign.algorithms.reno import clip_per_image
from mmalign.models import load_pipeline
from mmalign.rewards import load_reward
from mmalign.sampling import initial_noise, prompt_embedding_kwargs
from mmalign.shapes.evaluation import evaluate_images, evaluation_prompts, generate_images


def quality(args) -> dict:
    pipeline, reward = load_pipeline(args.model, args.device), load_reward("shapes-clip", device=args.device)
    prompts = evaluation_prompts("heldout", args.per_category, args.seed)
    one_step = dict(num_inference_steps=1, guidance_scale=0.0)
    results, seconds = {}, {}
    start = time.perf_counter()
    results["base"] = evaluate_images(generate_images(pipeline, prompts, seed=args.seed, **one_step), prompts, reward)
    seconds["base"] = time.perf_counter() - start
    start = time.perf_counter()
    optimised = reno(pipeline, prompts, reward, config=ReNOConfig(iterations=args.iterations),
                     generator=torch.Generator().manual_seed(args.seed), **one_step)
    results["ReNO"] = evaluate_images(optimised.images, prompts, reward)
    seconds["ReNO"] = time.perf_counter() - start
    start = time.perf_counter()
    ranked = best_of_n(pipeline, prompts, reward, num_candidates=args.iterations, batch_size=args.iterations,
                       generator=torch.Generator().manual_seed(args.seed), **one_step)
    results[f"best-of-{args.iterations}"] = evaluate_images(ranked.images, prompts, reward)
    seconds[f"best-of-{args.iterations}"] = time.perf_counter() - start

    categories = list(results["base"].report.accuracy)
    print(f"\nShapesEval, held-out, {args.per_category} prompts per category, {args.model}, seed {args.seed}")
    header = ["category", *results]
    rows = [[c, *(f"{r.report.accuracy[c]:.3f}" for r in results.values())] for c in categories]
    rows.append(["overall", *(f"{r.report.overall:.3f}" for r in results.values())])
    rows.append(["shapes-clip (mean)", *(f"{r.proxy_mean:.4f}" for r in results.values())])
    rows.append(["seconds", *(f"{seconds[name]:.0f}" for name in results)])
    print_table(header, rows)
    gain = results["ReNO"].report.overall - results["base"].report.overall
    proxy_gain = results["ReNO"].proxy_mean - results["base"].proxy_mean
    print(f"ReNO: {gain * 100:+.1f} points overall, shapes-clip {proxy_gain:+.4f}")
    if gain < 0 < proxy_gain:
        print("the proxy rose while the oracle fell: reward hacking")
    return {name: {"shapes_eval": r.report.accuracy, "overall": r.report.overall, "shapes_clip": r.proxy_mean,
                   "seconds": seconds[name]} for name, r in results.items()}


def minimal_loop(pipeline, reward, prompts, noise, iterations: int, config: ReNOConfig):
    """ReNO written out by hand for a one-step Euler ε-model: the reference for the overhead ratio."""
    unet, vae, scheduler = pipeline.unet, pipeline.vae, pipeline.scheduler
    scheduler.set_timesteps(1)
    timestep, sigma = scheduler.timesteps[0], scheduler.sigmas[0]
    embeds = prompt_embedding_kwargs(pipeline, prompts, 0.0)["prompt_embeds"]
    latents = noise.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([latents], lr=config.learning_rate, momentum=config.momentum, nesterov=True)
    for iteration in range(iterations):
        optimizer.zero_grad()
        x = latents * (sigma**2 + 1) ** 0.5  # the scheduler's init_noise_sigma
        eps = unet(x / (sigma**2 + 1) ** 0.5, timestep, encoder_hidden_states=embeds).sample
        images = (vae.decode((x - sigma * eps) / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
        loss = config.regularization_weight * noise_regularizer(latents).sum() - reward(images, prompts).reward.sum()
        if iteration < iterations - 1:  # as in ReNO, the last render is scored, not stepped from
            loss.backward()
            clip_per_image(latents.grad, config.max_grad_norm)
            optimizer.step()


def overhead(args) -> dict:
    pipeline, reward = load_pipeline(args.model, args.device), load_reward("shapes-clip", device=args.device)
    prompts = evaluation_prompts("heldout", 2, args.seed)[: args.batch_size]
    noise = initial_noise(pipeline, len(prompts), torch.Generator().manual_seed(0))
    iterations = 10
    config = ReNOConfig(iterations=iterations)
    timings = interleaved_medians({
        "hand-written loop": lambda: minimal_loop(pipeline, reward, prompts, noise, iterations, config),
        "mmalign reno()": lambda: reno(pipeline, prompts, reward, config=config, latents=noise, progress=False,
                                       num_inference_steps=1, guidance_scale=0.0),
    }, repeats=args.repeats)
    base = timings["hand-written loop"]
    print(f"\nReNO overhead, {args.model}, batch {len(prompts)}, {iterations} steps, medians of {args.repeats}")
    print_table(["path", "s/iteration", "ratio"],
                [[name, f"{t / iterations:.4f}", f"{t / base:.3f}"] for name, t in timings.items()])
    return {name: t / iterations for name, t in timings.items()}


def saved_activation_mib(pipeline, reward, prompts, checkpointing: bool) -> float:
    """MiB of tensors autograd keeps for the backward pass of one ReNO iteration, weights excluded:
    the memory gradient checkpointing trades for recomputation. (On a CPU there is no allocator
    peak to read; on a GPU, ``torch.cuda.max_memory_allocated`` is reported beside it.)"""
    weights = {p.untyped_storage().data_ptr() for module in (*pipeline.components.values(), reward)
               if isinstance(module, torch.nn.Module) for p in module.parameters()}
    kept = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        reno(pipeline, prompts, reward, config=ReNOConfig(iterations=1, gradient_checkpointing=checkpointing),
             generator=torch.Generator().manual_seed(0), progress=False, num_inference_steps=1, guidance_scale=0.0)
    return sum(kept.values()) / 2**20


def memory(args) -> dict:
    pipeline, reward = load_pipeline(args.model, args.device), load_reward("shapes-clip", device=args.device)
    prompts = evaluation_prompts("heldout", 16, args.seed)[: args.memory_batch_size]
    results = {}
    for checkpointing in (False, True):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        name = "with checkpointing" if checkpointing else "without"
        results[name] = {"saved_activations_mib": saved_activation_mib(pipeline, reward, prompts, checkpointing),
                         "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None}
    base = results["without"]["saved_activations_mib"]
    print(f"\nReNO memory for the backward pass, {args.model}, batch {len(prompts)}")
    print_table(["gradient checkpointing", "saved activations (MiB)", "ratio", "CUDA peak (MiB)"],
                [[name, f"{r['saved_activations_mib']:.1f}", f"{r['saved_activations_mib'] / base:.2f}",
                  "-" if r["cuda_peak_mib"] is None else f"{r['cuda_peak_mib']:.0f}"] for name, r in results.items()])
    return results


def print_table(header, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for line in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes-turbo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=["quality", "overhead", "memory"])
    parser.add_argument("--per-category", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=50, help="ReNO iterations, and N of best-of-N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8, help="images per ReNO batch in the overhead timing")
    parser.add_argument("--memory-batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default="benchmarks/results/reno.json")
    args = parser.parse_args()
    sections = {"quality": quality, "overhead": overhead, "memory": memory}
    results = {name: run(args) for name, run in sections.items() if args.only in (None, name)}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
