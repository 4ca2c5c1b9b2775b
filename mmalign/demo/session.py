"""The demo's model work, with no UI in it: one loaded pipeline, base against aligned for a prompt,
every reward's score and the oracle's verdict for both, and the person's vote written to the
preference store. ``demos/app.py`` puts a Gradio face on it; tests call it directly.
"""

from __future__ import annotations

import random
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..errors import InvalidInputError
from ..models import SHIPPED_MODELS, load_lora, load_pipeline, sampling_defaults
from ..prefs import CHOICES, PreferenceStore
from ..rewards import WeightedSum, load_reward, parse_weighted_name
from ..sampling.flow import VIDEO_FAMILIES
from ..sampling.pipelines import family

METHODS = ("ReNO", "best-of-N", "LoRA")
MAX_PROMPT_CHARACTERS = 1000  # far past what any text encoder reads (CLIP: 77 tokens)
LORA_ADAPTER = "aligned"
MAX_LOADED_REWARDS = 6


@dataclass
class Comparison:
    """One base/aligned pair as shown: images ``[3,H,W]`` in [0,1], the side the aligned image is on
    (drawn at random per pair, so a label never depends on position), ``scores`` per reward head and
    ``"weighted"`` as (base, aligned), the oracle's ``verdicts`` on the shapes world, the reward
    curve of a ReNO run as rows of (iteration, reward name, value), ``notes`` on the run, and
    ``warnings`` about the input."""

    prompt: str
    seed: int
    method: str
    base: Tensor
    aligned: Tensor
    aligned_side: str
    scores: dict[str, tuple[float, float]]
    verdicts: tuple[str, str] | None = None
    curve: list[tuple[int, str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    label_id: int | None = None

    def image(self, side: str) -> Tensor:
        return self.aligned if side == self.aligned_side else self.base

    def role(self, side: str) -> str:
        return f"aligned ({self.method})" if side == self.aligned_side else "base"

    def score_rows(self) -> list[list[str]]:
        """``[name, left, right]`` per score, then the oracle's verdict."""
        order = (0, 1) if self.aligned_side == "right" else (1, 0)
        rows = [[name, *(f"{values[i]:.4f}" for i in order)] for name, values in self.scores.items()]
        if self.verdicts is not None:
            rows.append(["ShapesEval (oracle)", *(self.verdicts[i] for i in order)])
        return rows


class DemoSession:
    """The state behind the demo: ``model`` (a shipped model, a pipeline folder or a hub id) loaded
    once, an optional LoRA on it, the rewards loaded so far, and the preference store at ``store``
    (default ``<output_dir>/preferences.db``). ``rng`` draws the side of each aligned image."""

    def __init__(self, model: str = "shapes-turbo", *, lora: str | None = None, rewards: str = "shapes-clip",
                 store: str | Path | None = None, output_dir: str | Path = "mmalign_outputs/demo",
                 device: str = "cpu", rng: random.Random | None = None):
        self.model, self.device, self.default_rewards = model, device, rewards
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.pipeline = load_pipeline(model, device)
        if family(self.pipeline) in VIDEO_FAMILIES:
            raise InvalidInputError(f"--model: {model!r} is a video model; the demo compares images. Fix: "
                                    f"`mmalign generate --model {model}` or `mmalign nrg` for videos.")
        self.shapes_world = model in SHIPPED_MODELS
        self.lora: str | None = None
        self._rewards: dict[str, torch.nn.Module] = {}
        self.rng = rng or random.SystemRandom()
        self._voting = threading.Lock()  # a double click must not label one pair twice
        self.store = PreferenceStore(store or self.output_dir / "preferences.db")
        self.objective(rewards)  # a bad --reward fails at start, not at the first click
        if lora:
            self.load_lora(lora)

    # -- set-up ------------------------------------------------------------------------------

    def load_lora(self, directory: str) -> str:
        """Put the LoRA saved in ``directory`` on the pipeline in place of any earlier one; a folder
        from another base leaves the pipeline without one."""
        if not isinstance(directory, str) or not directory.strip():
            raise InvalidInputError("LoRA folder: empty. Fix: give the output_dir of `mmalign train` "
                                    "(it holds pytorch_lora_weights.safetensors).")
        self.lora = None
        self.pipeline.unload_lora_weights()
        load_lora(self.pipeline, directory.strip(), self.model, adapter_name=LORA_ADAPTER)
        self.lora = directory.strip()
        return self.lora

    def objective(self, rewards: str) -> WeightedSum:
        """``"shapes-clip, clip=0.5"`` as one weighted objective; each reward is loaded once."""
        specs = [text.strip() for text in (rewards or "").split(",") if text.strip()]
        if not specs:
            raise InvalidInputError("Rewards: none given. Fix: name at least one, e.g. `shapes-clip` or "
                                    "`shapes-clip, clip=0.5` (see `mmalign rewards`).")
        named = [parse_weighted_name(spec) for spec in specs]
        for name, _ in named:
            if name.startswith("remote:") and name not in self._rewards:  # the page must not aim the server at hosts
                raise InvalidInputError(f"Rewards: {name!r}: a remote reward can only be named at start "
                                        "(`mmalign demo --reward remote:HOST:PORT`).")
            if name not in self._rewards:
                self._rewards[name] = load_reward(name, device=self.device)
            self._rewards[name] = self._rewards.pop(name)  # most recently used last
        while len(self._rewards) > max(MAX_LOADED_REWARDS, len(named)):  # models stay in memory: keep a few
            self._rewards.pop(next(iter(self._rewards)))
        return WeightedSum([self._rewards[name] for name, _ in named], [weight for _, weight in named])

    # -- comparing ---------------------------------------------------------------------------

    def compare(self, prompt: str, seed: int = 0, method: str = "ReNO", rewards: str | None = None,
                iterations: int = 20, num_candidates: int = 4, progress: bool = True) -> Comparison:
        """Base against aligned for ``prompt``: ReNO's optimised noise against its starting noise,
        the best of ``num_candidates`` samples against the first, or the LoRA on against off; each
        from ``seed``. ReNO and best-of-N run on the base model, with any LoRA switched off."""
        prompt, seed, notes = self.check_prompt(prompt), check_seed(seed), []
        objective = self.objective(rewards or self.default_rewards)
        generator = torch.Generator().manual_seed(seed)
        curve = []
        if method == "ReNO":
            from ..algorithms import ReNOConfig, reno

            if iterations < 1:
                raise InvalidInputError(f"ReNO iterations: must be at least 1, got {iterations}.")
            fallback = {"num_inference_steps": 1, "guidance_scale": 0.0}  # ReNO's one-step setting
            with lora_disabled(self.pipeline):
                result = reno(self.pipeline, [prompt], list(objective.members), objective.weights,
                              ReNOConfig(iterations=int(iterations)), generator=generator, progress=progress,
                              **sampling_defaults(self.model, fallback))
            base, aligned = result.base_images[0], result.images[0]
            curve = [(entry["iteration"], name, values[0]) for entry in result.history
                     for name, values in curve_series(entry).items()]
            notes.append(f"ReNO kept iteration {result.best_iteration[0]} of {int(iterations)}.")
        elif method == "best-of-N":
            from ..algorithms import best_of_n

            if num_candidates < 2:
                raise InvalidInputError(f"best-of-N: N must be at least 2, got {num_candidates}.")
            with lora_disabled(self.pipeline):
                result = best_of_n(self.pipeline, prompt, list(objective.members), int(num_candidates),
                                   objective.weights, generator=generator, keep_candidates=True,
                                   progress=progress, **sampling_defaults(self.model))
            base, aligned = result.candidates[0, 0], result.images[0]
            notes.append(f"The best of {int(num_candidates)} was candidate {int(result.best_index[0]) + 1}"
                         + (" (the base sample itself)." if int(result.best_index[0]) == 0 else "."))
        elif method == "LoRA":
            if self.lora is None:
                raise InvalidInputError("Method LoRA: no LoRA is loaded. Fix: load a fine-tune's output folder "
                                        "(or start with `mmalign demo --lora DIR`), or pick ReNO or best-of-N.")
            with lora_disabled(self.pipeline):
                base = self.generate(prompt, seed)
            aligned = self.generate(prompt, seed)
        else:
            raise InvalidInputError(f"Method: got {method!r}; pick one of {', '.join(METHODS)}.")
        comparison = self.judged(prompt, seed, method, base.float().cpu(), aligned.float().cpu(), objective, curve, notes)
        comparison.warnings += self.truncation_warnings(prompt)
        return comparison

    def judged(self, prompt, seed, method, base, aligned, objective, curve, notes) -> Comparison:
        with torch.no_grad():
            scored = objective(torch.stack([base, aligned]).to(self.device), [prompt, prompt])
        scores = {"weighted": tuple(scored.reward.float().cpu().tolist())} if len(scored.heads) > 1 else {}
        scores.update({name: tuple(values.float().cpu().tolist()) for name, values in scored.heads.items()})
        verdicts = None
        if self.shapes_world:
            from ..shapes.oracle import ShapesEval

            oracle = ShapesEval()
            verdicts = tuple(verdict_text(oracle.judge(image, prompt)) for image in (base, aligned))
        side = "left" if self.rng.random() < 0.5 else "right"
        return Comparison(prompt, seed, method, base, aligned, side, scores, verdicts, curve, notes)

    def generate(self, prompt: str, seed: int) -> Tensor:
        generator = torch.Generator(self.pipeline.device).manual_seed(seed)
        with torch.no_grad():
            return self.pipeline(prompt, generator=generator, output_type="pt", **sampling_defaults(self.model)).images[0]

    @staticmethod
    def check_prompt(prompt) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInputError("Prompt: empty. Fix: describe an image, e.g. `a red circle left of a blue square`.")
        if len(prompt) > MAX_PROMPT_CHARACTERS:
            raise InvalidInputError(f"Prompt: {len(prompt):,} characters; the demo takes at most "
                                    f"{MAX_PROMPT_CHARACTERS:,} (text encoders read far fewer). Fix: shorten it.")
        return prompt.strip()

    def truncation_warnings(self, prompt: str) -> list[str]:
        tokenizer = getattr(self.pipeline, "tokenizer", None)
        if tokenizer is None:
            return []
        tokens, limit = len(tokenizer(prompt).input_ids), tokenizer.model_max_length
        if tokens <= limit:
            return []
        return [f"The prompt is {tokens} tokens; the text encoder read only its first {limit}."]

    # -- labelling ---------------------------------------------------------------------------

    def vote(self, comparison: Comparison | None, choice: str, annotator: str = "anonymous") -> int:
        """Store the person's ``choice`` ("left", "right" or "tie") for the pair as it was shown;
        returns the row id. A pair takes one label."""
        if comparison is None:
            raise InvalidInputError("Vote: there is no image pair yet. Fix: press Generate first.")
        if choice not in CHOICES:
            raise InvalidInputError(f"Vote: got {choice!r}; the labels are {', '.join(CHOICES)}.")
        with self._voting:
            if comparison.label_id is not None:
                raise InvalidInputError(f"Vote: this pair is already labelled (#{comparison.label_id}). "
                                        "Fix: press Generate for a new pair.")
            comparison.label_id = self.store.add(comparison.prompt, comparison.image("left"), comparison.image("right"),
                                                 choice, annotator=(annotator or "").strip() or "anonymous", source="human")
        return comparison.label_id

    def label_count(self) -> int:
        return len(self.store)

    def close(self) -> None:
        self.store.close()


def curve_series(entry: dict) -> dict[str, list[float]]:
    """One ReNO iteration's rewards by name; the weighted total only when it differs from the one reward."""
    return {"weighted": entry["weighted_reward"], **entry["rewards"]} if len(entry["rewards"]) > 1 else entry["rewards"]


def check_seed(seed) -> int:
    try:
        whole = int(seed)
        valid = float(seed) == whole and 0 <= whole < 2**63
    except (TypeError, ValueError, OverflowError):
        valid = False
    if not valid:
        raise InvalidInputError(f"Seed: must be a whole number from 0 to 2^63 − 1, got {seed!r}.")
    return whole


def verdict_text(verdict) -> str:
    if verdict.passed is None:
        return "not judged (outside the shapes grammar)"
    return "pass" if verdict.passed else "fail"


@contextmanager
def lora_disabled(pipeline):
    """The base model: the pipeline's LoRA (if any) off inside the block, on again after."""
    loaded = bool(pipeline.get_active_adapters()) if hasattr(pipeline, "get_active_adapters") else False
    if not loaded:
        yield
        return
    pipeline.disable_lora()
    try:
        yield
    finally:
        pipeline.enable_lora()
