"""D3PO and PRDP on the shapes world: what they buy, what the LoRA-disabled reference saves, and what
the shared loop costs per training step.

- ``quality``: held-out ShapesEval of shapes-sd before and after each method, per category, with
  shapes-clip (the simulated human for D3PO, the reward for PRDP) beside it. The oracle judges;
  shapes-clip is only what the methods learn from. ``--trained d3po=DIR`` evaluates a run already
  made with the same config instead of training again (its log gives the training minutes).
- ``memory``: peak resident memory of one D3PO training step (gradient checkpointing on, the
  default) on an SD-1.5-sized UNet (random weights, 256 px) whose reference is the same UNet with
  its LoRA disabled, divided by the same step with a full frozen copy as the reference; each in its
  own process, side by side.
- ``overhead``: one pass of D3PO's training steps over a collected iteration through mmalign (the
  loop's ``optimise`` with accelerate and ``D3PO.loss``) divided by a hand-written loop of the same
  maths on the same modules and data, timed interleaved.

    python benchmarks/bench_d3po_prdp.py                  # everything, on the CPU
    python benchmarks/bench_d3po_prdp.py --only memory
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench_raft import evaluate_pipeline, gain_table, ratio_table
from bench_reno import print_table
from bench_rewards import interleaved_medians
from mmalign.algorithms.d3po import D3PO, D3POConfig
from mmalign.algorithms.finetune import finetune, make_accelerator, optimise
from mmalign.algorithms.prdp import PRDP, PRDPConfig
from mmalign.config import load_config
from mmalign.models import load_pipeline
from mmalign.rewards import load_reward
from mmalign.shapes.evaluation import evaluation_prompts

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
METHODS = {"d3po": (D3PO, D3POConfig), "prdp": (PRDP, PRDPConfig)}


def quality(args) -> dict:
    results, trained = {}, dict(item.split("=", 1) for item in args.trained)
    for name, (method_class, config_class) in METHODS.items():
        if args.method not in (None, name):
            continue
        output_dir = trained.get(name) or tempfile.mkdtemp(prefix=f"{name}-", dir=args.output_dir)
        config = load_config(config_class, CONFIGS / name / "shapes-sd.yaml", [f"output_dir={output_dir}", "report_to=none"])
        reward = load_reward("shapes-clip")
        prompts = evaluation_prompts("heldout", args.per_category, config.seed)
        base = evaluate_pipeline(load_pipeline(config.model), reward, prompts, config)
        if name in trained:
            pipeline = load_pipeline(config.model)
            pipeline.load_lora_weights(output_dir)
            history = [json.loads(line) for line in (Path(output_dir) / "log.jsonl").read_text().splitlines()]
        else:
            method = method_class(config)
            history = finetune(method)
            pipeline = method.pipeline
        minutes = sum(row.get("train_seconds", math.nan) for row in history) / 60
        tuned = evaluate_pipeline(pipeline, reward, prompts, config)
        print(f"\n{name.upper()} on {config.model} with shapes-clip: {config.num_iterations} iterations, "
              f"{minutes:.1f} training minutes (evaluations excluded); held-out ShapesEval, {args.per_category} prompts "
              "per category")
        results[name] = {"minutes": minutes, "config": config.__dict__, "history": history,
                         **gain_table(base, tuned, name.upper())}
    return results


MEMORY_SETUP = """
# Stable Diffusion 1.5's UNet config (860M parameters); the class defaults plus its cross-attention width
from diffusers import UNet2DConditionModel
model = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
lora = dict(rank=4)
latents, text = torch.randn(2, 4, 32, 32), torch.randn(2, 77, 768)  # CFG: unconditional and conditional rows
timestep = torch.tensor([500, 500])
forward = lambda module: module(latents, timestep, encoder_hidden_states=text).sample
model.enable_gradient_checkpointing()  # D3POConfig's default, after the official code
"""

# one training step against the reference; the setup defines model, lora, forward
MEMORY_STEP = """
import copy, resource, sys, torch
from mmalign.algorithms.lora import add_lora
from mmalign.sampling.trajectories import adapters_disabled
torch.manual_seed(0)
{setup}
reference = copy.deepcopy(model).requires_grad_(False) if sys.argv[1] == "copy" else None
add_lora(model, **lora)
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
with torch.no_grad():
    if reference is None:
        with adapters_disabled(model):
            ref = forward(model)
    else:
        ref = forward(reference)
loss = ((forward(model) - ref) ** 2).mean()
loss.backward()
optimizer.step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # MiB on Linux
"""


def memory(args) -> dict:
    return reference_memory(MEMORY_SETUP, "Peak resident memory of one D3PO step, SD-1.5-sized UNet (random weights), "
                                         "batch 1 with CFG at 256 px")


def reference_memory(setup: str, title: str) -> dict:
    """Run one training step of the model ``setup`` builds, with the reference as the model with its
    LoRA disabled and as a frozen copy, each in its own process; print and return both peak RSS and
    their ratio."""
    peaks = {}
    for variant in ("lora-disabled", "copy"):
        script = MEMORY_STEP.format(setup=setup)
        result = subprocess.run([sys.executable, "-c", script, variant], capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"the {variant} memory step failed:\n{result.stderr[-2000:]}")
        peaks[variant] = float(result.stdout.strip().splitlines()[-1])
    ratio = peaks["lora-disabled"] / peaks["copy"]
    print(f"\n{title}")
    print_table(["reference", "peak MiB", "ratio"], [["LoRA disabled (mmalign)", f"{peaks['lora-disabled']:.0f}", f"{ratio:.3f}"],
                                                     ["full frozen copy", f"{peaks['copy']:.0f}", "1.000"]])
    return {**peaks, "ratio": ratio}


def hand_written_pass(method, module, optimizer, examples, batch_size: int, config: D3POConfig):
    """D3PO's training steps written out: CFG UNet forward on both sides' x_t, the DDIM step's Gaussian
    log-density of the stored x_{t-1}, the clamped per-step DPO loss, backward, clip, step."""
    scheduler, alphas = method.scheduler, method.scheduler.alphas_cumprod.float()
    unconditional = method.unconditional["encoder_hidden_states"]
    step_size = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        n = len(batch)
        x = torch.cat([torch.stack([e["chosen_latents"] for e in batch]), torch.stack([e["rejected_latents"] for e in batch])])
        text = torch.stack([e["text"]["encoder_hidden_states"] for e in batch]).repeat(2, 1, 1)
        t = scheduler.timesteps[torch.tensor([e["step"] for e in batch])].repeat(2)
        output = module(torch.cat([x[:, 0], x[:, 0]]), torch.cat([t, t]),
                        encoder_hidden_states=torch.cat([unconditional.expand(2 * n, -1, -1), text])).sample
        uncond, cond = output.chunk(2)
        epsilon = uncond + config.guidance_scale * (cond - uncond)
        a_t = alphas[t].view(-1, 1, 1, 1)
        t_prev = t - step_size
        a_prev = torch.where(t_prev >= 0, alphas[t_prev.clamp(min=0)], torch.tensor(scheduler.final_alpha_cumprod)).view(-1, 1, 1, 1)
        x0 = (x[:, 0] - (1 - a_t).sqrt() * epsilon) / a_t.sqrt()
        std = config.eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
        mean = a_prev.sqrt() * x0 + (1 - a_prev - std**2).sqrt() * epsilon
        log_prob = (-((x[:, 1] - mean) ** 2) / (2 * std**2) - std.log() - 0.5 * math.log(2 * math.pi)).mean((1, 2, 3))
        reference = torch.cat([torch.stack([e["chosen_reference"] for e in batch]), torch.stack([e["rejected_reference"] for e in batch])])
        ratio = (log_prob - reference).exp().clamp(1 - config.clip_range, 1 + config.clip_range).log()
        loss = -F.logsigmoid(config.beta * (ratio[:n] - ratio[n:])).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), config.max_grad_norm)
        optimizer.step()


def overhead(args) -> dict:
    workdir = Path(tempfile.mkdtemp())
    config = load_config(D3POConfig, CONFIGS / "d3po" / "shapes-sd.yaml",
                         [f"output_dir={workdir}", "eval_every=0", "prompts_per_iteration=64", "report_to=none"])
    method = D3PO(config)
    accelerator = make_accelerator(config)
    module = method.build(accelerator.device)
    parameters = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate)
    prepared, prepared_optimizer = accelerator.prepare(module, torch.optim.AdamW(parameters, lr=config.learning_rate))
    examples = method.collect(0, torch.Generator().manual_seed(0), accelerator).examples
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(1)).tolist()
    shuffled = [examples[i] for i in order]
    timings = interleaved_medians({
        "hand-written loop": lambda: hand_written_pass(method, module, optimizer, shuffled, config.train_batch_size, config),
        "mmalign (optimise + D3PO.loss)": lambda: optimise(accelerator, method, prepared, prepared_optimizer, examples,
                                                             torch.Generator().manual_seed(1)),
    }, repeats=args.repeats)
    print(f"\nD3PO training pass over one iteration ({len(examples)} pair-steps, batch {config.train_batch_size}), "
          f"medians of {args.repeats}")
    return ratio_table(timings, "s/pass")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["quality", "memory", "overhead"])
    parser.add_argument("--method", choices=sorted(METHODS), help="quality: one method only")
    parser.add_argument("--trained", action="append", default=[], metavar="METHOD=DIR",
                        help="quality: evaluate this finished run of the shipped config instead of training again")
    parser.add_argument("--per-category", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output-dir", default=str(Path(tempfile.gettempdir()) / "mmalign-bench-d3po-prdp"))
    parser.add_argument("--output", default="benchmarks/results/d3po_prdp.json")
    args = parser.parse_args()
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    sections = {"quality": quality, "memory": memory, "overhead": overhead}
    run_sections(sections, args, None if args.only is None else [args.only], merged=("quality",))


def run_sections(sections: dict, args, selected: list[str] | None, merged: tuple[str, ...] = ()) -> None:
    """Run each selected section (all when ``selected`` is None), timed, into ``args.output``'s JSON:
    sections not run keep their earlier results, and a ``merged`` section adds to its earlier dict
    (a quality run of one method keeps the other method's)."""
    output = Path(args.output)
    results = json.loads(output.read_text()) if output.is_file() else {}
    for name, run in sections.items():
        if selected is None or name in selected:
            started = time.perf_counter()
            results[name] = {**results.get(name, {}), **run(args)} if name in merged else run(args)
            print(f"({name}: {time.perf_counter() - started:.0f} s)")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
