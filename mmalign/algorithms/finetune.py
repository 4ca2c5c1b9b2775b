"""The one fine-tune loop every training method shares.

A method contributes what is its own, through the :class:`FinetuneMethod` protocol: the trainable
module, the data it collects each iteration, its loss, its evaluation and how its weights are saved.
The loop does the rest, once, for all of them:

- ``accelerate`` for devices, data parallelism, mixed precision and gradient accumulation;
- an iteration = collect → optimise on what was collected → log → checkpoint;
- checkpoints written atomically (staged, then renamed) after every iteration, and ``resume``
  continuing exactly where a killed run stopped: each iteration's randomness is derived from
  ``(seed, iteration, process)``, so a resumed run repeats the uninterrupted one;
- a JSONL log, the accelerate trackers (TensorBoard by default) and a PNG of the curves.

Output folder: ``config.yaml``, ``log.jsonl``, ``curves.png``, ``checkpoints/iteration-NNNNNN/``,
the trackers' ``logs/``, and the final weights (LoRA: ``pytorch_lora_weights.safetensors``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import yaml

from ..config import changed_keys, to_dict
from ..errors import InvalidInputError
from ..storage import atomic_write

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
LOG_FILE = "log.jsonl"


@dataclass
class FinetuneConfig:
    """What every fine-tune method shares. Method configs (:class:`~mmalign.algorithms.raft.RAFTConfig`,
    …) extend it with their own fields.

    Model:
        model: a shipped model (``shapes-turbo``, ``shapes-sd``, ``shapes-flow``, ``shapes-lm``), a local
            folder or a hub id.
        use_lora: train LoRA adapters through peft (default) rather than every weight.
        rank: LoRA rank (diffusers' ``train_text_to_image_lora.py``: 4).
        lora_alpha: LoRA scaling numerator; ``None`` means ``rank`` (scale 1), as in that script.
        lora_target_modules: module-name suffixes that get adapters; ``None`` means every attention
            projection of a diffusers model (that script's choice) and every linear layer of an LM.
            ``[attn2.to_k, attn2.to_v, ...]`` adapts only cross-attention, as Custom Diffusion does.

    Training:
        output_dir: where logs, checkpoints and final weights go.
        num_iterations: rounds of collect → optimise.
        seed: seeds collection, shuffling and noise; a run repeats exactly for a seed.
        learning_rate: AdamW learning rate (diffusers' LoRA script: 1e-4).
        adam_weight_decay: AdamW weight decay (diffusers' scripts: 1e-2).
        train_batch_size: examples per process per optimiser step.
        gradient_accumulation_steps: steps whose gradients are summed before an update.
        max_grad_norm: gradient clipping norm (diffusers' scripts: 1.0).
        mixed_precision: "no", "fp16" or "bf16", as accelerate takes it.

    Logging and checkpoints:
        report_to: accelerate tracker ("tensorboard", "wandb", …) or "none"; a JSONL log is always written.
        eval_every: evaluate on held-out prompts every this many iterations (0: never).
        checkpoints_total_limit: how many iteration checkpoints to keep.
    """

    model: str = "shapes-turbo"
    use_lora: bool = True
    rank: int = 4
    lora_alpha: float | None = None
    lora_target_modules: list[str] | None = None
    output_dir: str = "outputs/finetune"
    num_iterations: int = 10
    seed: int = 0
    learning_rate: float = 1e-4
    adam_weight_decay: float = 1e-2
    train_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    report_to: str = "tensorboard"
    eval_every: int = 1
    checkpoints_total_limit: int = 2

    def __post_init__(self):
        for name in ("rank", "num_iterations", "train_batch_size", "gradient_accumulation_steps", "checkpoints_total_limit"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name}: must be at least 1, got {getattr(self, name)}.")
        if self.learning_rate <= 0:
            raise InvalidInputError(f"learning_rate: must be positive, got {self.learning_rate}.")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise InvalidInputError(f"mixed_precision: must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}.")
        if self.eval_every < 0:
            raise InvalidInputError(f"eval_every: must be 0 (never) or positive, got {self.eval_every}.")


@dataclass
class Collected:
    """What a method collected in one iteration: its training examples (on this process), metrics,
    and how many passes to make over the examples, each in a fresh order (PRDP's K, D3PO's epochs)."""

    examples: list
    metrics: dict
    passes: int = 1


class FinetuneMethod(Protocol):
    name: str
    config: FinetuneConfig

    def build(self, device: torch.device) -> torch.nn.Module: ...
    def collect(self, iteration: int, generator: torch.Generator, accelerator) -> Collected: ...
    def loss(self, module: torch.nn.Module, examples: list, generator: torch.Generator) -> torch.Tensor | tuple[torch.Tensor, dict]: ...
    def evaluate(self) -> dict: ...
    def save_pretrained(self, directory: Path) -> None: ...


def iteration_generator(seed: int, iteration: int, process: int = 0) -> torch.Generator:
    """The iteration's own RNG, so that resuming at an iteration replays its randomness exactly."""
    return torch.Generator().manual_seed(seed * 1_000_003 + iteration * 1_009 + process)


def make_accelerator(config: FinetuneConfig):
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    trackers = None if config.report_to == "none" else config.report_to
    project = ProjectConfiguration(project_dir=config.output_dir, logging_dir=str(Path(config.output_dir) / "logs"))
    # cpu=True on a machine without CUDA is what makes several launched CPU processes one gloo group
    return Accelerator(gradient_accumulation_steps=config.gradient_accumulation_steps, mixed_precision=config.mixed_precision,
                       log_with=trackers, project_config=project, cpu=not torch.cuda.is_available())


def finetune(method: FinetuneMethod, resume: bool = False, accelerator=None) -> list[dict]:
    """Run ``method`` for its iterations; returns the log, one row per iteration."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    config = method.config
    output_dir = Path(config.output_dir)
    if not resume and checkpoint_dirs(output_dir):
        raise InvalidInputError(
            f"output_dir: {output_dir} holds the checkpoints of an earlier run. Fix: pass --resume (resume=True) to "
            "continue it, or choose another output_dir; nothing is overwritten."
        )
    accelerator = accelerator or make_accelerator(config)
    set_seed(config.seed)  # the same fresh adapter weights on every process and in every run of a seed
    module = method.build(accelerator.device)
    trainable = [p for p in module.parameters() if p.requires_grad]
    if not trainable:
        raise InvalidInputError("model: nothing to train; the method froze every parameter.")
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.adam_weight_decay)
    module, optimizer = accelerator.prepare(module, optimizer)
    start, history = restore(accelerator, output_dir, method) if resume else (0, [])
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(output_dir / "config.yaml", lambda tmp: Path(tmp).write_text(yaml.safe_dump(to_dict(config), sort_keys=False)))
    if config.report_to != "none":
        accelerator.init_trackers(method.name, config={k: v for k, v in to_dict(config).items() if isinstance(v, (int, float, str, bool))})
    progress = tqdm(range(start, config.num_iterations), initial=start, total=config.num_iterations,
                    desc=method.name, unit="iteration", disable=not accelerator.is_main_process)
    for iteration in progress:
        started = time.perf_counter()
        generator = iteration_generator(config.seed, iteration, accelerator.process_index)
        collected = method.collect(iteration, generator, accelerator)
        losses, step_metrics = optimise(accelerator, method, module, optimizer, collected.examples, generator, collected.passes)
        row = {"iteration": iteration + 1, "loss": float(sum(losses) / len(losses)) if losses else float("nan"),
               "steps": len(losses), **collected.metrics, **step_metrics}
        row["train_seconds"] = time.perf_counter() - started  # collection and optimisation; evaluation is extra
        if config.eval_every and ((iteration + 1) % config.eval_every == 0 or iteration + 1 == config.num_iterations):
            row.update(evaluate_on_main(accelerator, method))
        history.append(row)
        progress.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k in ("loss", "reward_kept", "shapes_eval")})
        if config.report_to != "none":
            accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=iteration + 1)
        save_checkpoint(accelerator, output_dir, iteration + 1, history, method)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        method.save_pretrained(output_dir)
    accelerator.end_training()
    return history


def optimise(accelerator, method, module, optimizer, examples: list, generator: torch.Generator,
             passes: int = 1) -> tuple[list[float], dict]:
    """``passes`` passes over the collected examples, each in shuffled minibatches; returns each step's
    loss and the mean of the metrics the method's loss reports beside it (``loss`` may return
    ``(loss, metrics)``, as D3PO's implicit preference accuracy). With several processes the
    examples are first dealt out evenly, since a selection (RAFT's global top fraction) can leave one
    process with none, and data parallelism needs every process in every gradient all-reduce; a
    process one example short cycles through its own. When there are fewer examples than processes,
    no process steps."""
    config = method.config
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        examples = gather_object(examples)[accelerator.process_index :: accelerator.num_processes]
    counts = accelerator.gather(torch.tensor([len(examples)], device=accelerator.device))
    steps = 0 if int(counts.min()) == 0 else math.ceil(int(counts.max()) / config.train_batch_size)
    module.train()
    losses, metrics = [], {}
    for step in range(steps * passes):
        if step % steps == 0:
            order = torch.randperm(len(examples), generator=generator).tolist()
        within = step % steps
        picks = [order[(within * config.train_batch_size + i) % len(order)] for i in range(min(config.train_batch_size, len(order)))]
        with accelerator.accumulate(module):
            loss = method.loss(module, [examples[i] for i in picks], generator)
            loss, reported = loss if isinstance(loss, tuple) else (loss, {})
            for name, value in reported.items():
                metrics.setdefault(name, []).append(float(accelerator.gather(torch.as_tensor(value, dtype=torch.float32, device=accelerator.device)[None]).mean()))
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.max_grad_norm:
                accelerator.clip_grad_norm_(module.parameters(), config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        losses.append(float(accelerator.gather(loss.detach()[None]).mean()))
    module.eval()
    return losses, {name: sum(values) / len(values) for name, values in metrics.items()}


def evaluate_on_main(accelerator, method) -> dict:
    accelerator.wait_for_everyone()
    metrics = method.evaluate() if accelerator.is_main_process else {}
    accelerator.wait_for_everyone()
    return metrics


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    folder = output_dir / CHECKPOINTS
    return sorted(folder.glob("iteration-*")) if folder.is_dir() else []


def save_checkpoint(accelerator, output_dir: Path, iteration: int, history: list[dict], method) -> None:
    """Stage the accelerate state (model, optimiser, RNGs) and the trainer state in a hidden folder,
    then rename it: a checkpoint folder either is complete or does not exist."""
    final = output_dir / CHECKPOINTS / f"iteration-{iteration:06d}"
    staging = output_dir / CHECKPOINTS / f".staging-{iteration:06d}"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    # Tied weights (an LM's embedding and head) are saved once and tied again on load; accelerate
    # would warn about it at every checkpoint.
    accelerate_saver = logging.getLogger("accelerate.utils.other")
    level = accelerate_saver.level
    accelerate_saver.setLevel(logging.ERROR)
    try:
        accelerator.save_state(str(staging))
    finally:
        accelerate_saver.setLevel(level)
    accelerator.wait_for_everyone()  # every process's RNG state is in the staging folder before it is renamed
    if accelerator.is_main_process:
        state = {"iteration": iteration, "method": method.name, "model": method.config.model,
                 "config": to_dict(method.config), "history": history}
        (staging / STATE_FILE).write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        write_log(output_dir, history, method.name)
        for old in checkpoint_dirs(output_dir)[: -method.config.checkpoints_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def write_log(output_dir: Path, history: list[dict], title: str) -> None:
    from ..reports import training_curves

    lines = "".join(json.dumps(row) + "\n" for row in history)
    atomic_write(output_dir / LOG_FILE, lambda tmp: Path(tmp).write_text(lines))
    training_curves(history, output_dir / "curves.png", title=title)


def restore(accelerator, output_dir: Path, method) -> tuple[int, list[dict]]:
    """Load the latest checkpoint; returns ``(iterations done, history)``, or ``(0, [])`` if none."""
    checkpoints = checkpoint_dirs(output_dir)
    if not checkpoints:
        warnings.warn(f"resume: no checkpoint in {output_dir / CHECKPOINTS}; starting from the beginning.", stacklevel=3)
        return 0, []
    latest = checkpoints[-1]
    state = json.loads((latest / STATE_FILE).read_text())
    if state["method"] != method.name or state["model"] != method.config.model:
        raise InvalidInputError(
            f"resume: {latest} is a {state['method']} checkpoint of model {state['model']!r}, not a {method.name} run of "
            f"{method.config.model!r}. Fix: pass that model, or a fresh output_dir."
        )
    changed = [key for key in changed_keys(state["config"], to_dict(method.config)) if key != "num_iterations"]
    if changed:
        warnings.warn(f"resume: the config changed since {latest.name}: {', '.join(changed)}. The run continues with "
                      "the new values.", stacklevel=3)
    try:
        accelerator.load_state(str(latest))
    except (RuntimeError, KeyError, ValueError) as error:
        raise InvalidInputError(f"resume: {latest} does not fit this model ({str(error).splitlines()[0]}). "
                                "Fix: resume with the config it was saved with, or use a fresh output_dir.") from error
    return state["iteration"], state["history"]
