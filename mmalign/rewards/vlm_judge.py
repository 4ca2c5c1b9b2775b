"""VLM judges: a vision-language model scores an image for its prompt, through transformers'
``AutoModelForImageTextToText`` and ``AutoProcessor`` (Qwen2-VL, Qwen2.5-VL, LLaVA(-OneVision),
Idefics3, SmolVLM, InternVL ``-hf``: any model whose processor has a chat template with images).

Three modes, each read the way its source reads it:

- ``"yes-probability"``: VQAScore (Lin et al. 2024, arXiv:2404.01291; linzhiqiu/t2v_metrics). The
  question 'Does this figure show "{prompt}"? Please answer yes or no.'; the score is P("Yes") at the
  first answer position, a softmax over the whole vocabulary, from one forward pass (token logits:
  the answer is one token at a known position, so nothing needs sampling).
- ``"likert"``: MJ-Bench's narrative templates (5 or 10 levels, "Extremely Poor" … "Outstanding").
  The judge analyses before it rates, so the rating's position is not known in advance: the score
  comes from generation, ``num_samples`` answers each parsed to its level (1…L), aggregated by
  majority (levels are ordinal labels; the lower level wins a tie).
- ``"numeric"``: MJ-Bench's 1–10 template, generated and parsed like the Likert mode, averaged.

An answer that does not parse gives NaN and a False mask, never 0; the aggregate uses the answers
that parse. :meth:`VLMJudge.compare` judges two images in one prompt (MJ-Bench's two-image
template), the pair's order drawn at random for every sample as VL-RewardBench does, and maps
"IMAGE-1/IMAGE-2 is better" back to the caller's order.

Templates are in ``judge_templates/`` with their licence note.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import torch
from torch import Tensor

from ..errors import InvalidInputError, WeightsNotFoundError
from .base import Reward, RewardOutput, RewardSpec
from .card import RewardCard

TEMPLATES = Path(__file__).resolve().parent / "judge_templates"
MODES = ("yes-probability", "likert", "numeric")
LIKERT_LEVELS = {
    5: ("Extremely Poor", "Poor", "Average", "Good", "Outstanding"),
    10: ("Extremely Poor", "Very Poor", "Poor", "Below Average", "Average", "Above Average", "Good", "Very Good",
         "Excellent", "Outstanding"),
}
RATING = re.compile(r'RATING"?\s*:\s*"?\s*([^"\n}]+)', re.IGNORECASE)
BETTER_IMAGE = re.compile(r"BETTER IMAGE\s*:\s*\D{0,20}?(\d)", re.IGNORECASE)


def load_template(name: str) -> str:
    path = TEMPLATES / f"{name}.txt"
    if not path.is_file():
        known = sorted(p.stem for p in TEMPLATES.glob("*.txt"))
        raise InvalidInputError(f"template: no judge template {name!r}; shipped: {', '.join(known)}.")
    return path.read_text(encoding="utf-8")


def parse_number(answer: str, low: float = 1, high: float = 10) -> float | None:
    """The rating after ``…RATING": "`` (MJ-Bench's format), or the answer when it is only a number;
    None when there is none or it lies outside ``[low, high]``."""
    match = RATING.search(answer)
    number = re.search(r"\d+(?:\.\d+)?", match.group(1)) if match else re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", answer)
    if number is None:
        return None
    value = float(number.group(0))
    return value if low <= value <= high else None


def parse_level(answer: str, levels: tuple[str, ...]) -> int | None:
    """The 1-based level named after ``…RATING": "``, or by the whole answer; the longest label that
    fits wins, so "Extremely Poor" is never read as "Poor"."""
    match = RATING.search(answer)
    text = (match.group(1) if match else answer).strip().strip('".').lower()
    for label in sorted(levels, key=len, reverse=True):
        if text == label.lower() or (match and text.startswith(label.lower())):
            return levels.index(label) + 1
    return None


def parse_preference(answer: str) -> str | None:
    """MJ-Bench's ``BETTER IMAGE: 1|2|0`` as "first", "second" or "tie"; None if absent."""
    match = BETTER_IMAGE.search(answer)
    return {"1": "first", "2": "second", "0": "tie"}.get(match.group(1)) if match else None


def needs_remote_code(model: str) -> bool:
    """Whether the config of ``model`` (a folder or hub id) names code of its own (``auto_map``) for a
    model type transformers does not know."""
    import json

    from transformers import CONFIG_MAPPING

    path = Path(model) / "config.json"
    if not path.is_file():
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(model, "config.json"))
        except Exception:  # offline or no such repo: from_pretrained reports it with its fix
            return False
    config = json.loads(path.read_text())
    return "auto_map" in config and config.get("model_type") not in CONFIG_MAPPING


class VLMJudge(Reward):
    """A VLM as a reward for images and prompts; not differentiable (it reads PIL images).

    Args:
        model, processor: an ``AutoModelForImageTextToText`` and its ``AutoProcessor``.
        mode: "yes-probability", "likert" or "numeric" (see the module docstring).
        scale: Likert levels, 5 or 10.
        aspect: which MJ-Bench criterion the generated modes ask about, "alignment" or "artifacts".
        num_samples: answers generated per image (generated modes); 1 decodes greedily.
        temperature, max_new_tokens: of the generated answers.
        seed: seeds sampling and the pair orders of :meth:`compare`.
    """

    def __init__(self, model, processor, mode: str = "yes-probability", *, scale: int = 5, aspect: str = "alignment",
                 num_samples: int = 1, temperature: float = 0.7, max_new_tokens: int = 512, seed: int = 0,
                 name: str = "vlm-judge", spec: RewardSpec | None = None):
        if mode not in MODES:
            raise InvalidInputError(f"mode: {mode!r} is not one of {', '.join(MODES)}.")
        if mode == "likert" and scale not in LIKERT_LEVELS:
            raise InvalidInputError(f"scale: Likert judges use 5 or 10 levels (MJ-Bench), got {scale}.")
        if num_samples < 1:
            raise InvalidInputError(f"num_samples: must be at least 1, got {num_samples}.")
        kind, output_range = {"yes-probability": ("probability", (0.0, 1.0)), "numeric": ("score", (1.0, 10.0)),
                              "likert": ("likert", (1.0, float(scale)))}[mode]
        base = spec or RewardSpec(modality="image", differentiable=False, needs_prompt=True)
        super().__init__(base.replace(differentiable=False, output_kind=kind, output_range=output_range), name)
        self.model, self.processor, self.mode = model, processor, mode
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.levels = LIKERT_LEVELS.get(scale) if mode == "likert" else None
        self.num_samples, self.temperature, self.max_new_tokens = num_samples, temperature, max_new_tokens
        self.rng = random.Random(seed)
        self.generator_seed, self.calls = seed, 0
        template = {"yes-probability": "vqascore", "numeric": f"{aspect}_number_scale10",
                    "likert": f"{aspect}_narrative_scale{scale}"}[mode]
        self.template = load_template(template)
        self.yes_id = self.answer_token("Yes") if mode == "yes-probability" else None
        for label in self.levels or (tuple(str(i) for i in range(1, 11)) if mode == "numeric" else ()):
            self.check_spelling(label)
        self.freeze()

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, model: str, mode: str = "yes-probability", *, device: str | None = None,
                        dtype: torch.dtype | None = None, trust_remote_code: bool = False, **kwargs) -> VLMJudge:
        """A judge from a hub id or folder. ``trust_remote_code`` stays off unless you turn it on: it
        runs the repository's own Python code."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if not trust_remote_code and needs_remote_code(model):  # asked before transformers would prompt on stdin
            raise InvalidInputError(
                f"model: {model!r} needs its own code to load. Fix: pass trust_remote_code=True if you trust that "
                "repository (it runs its Python files), or use its -hf variant.")
        try:
            processor = AutoProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
            judge = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype or torch.float32,
                                                                trust_remote_code=trust_remote_code)
        except ValueError as error:
            raise InvalidInputError(f"model: {model!r} is not an image-text-to-text model ({error}).") from error
        except OSError as error:
            raise WeightsNotFoundError(f"model: cannot load {model!r} ({str(error).splitlines()[0]}). "
                                       "Fix: check the name and your network, or pass a local folder.") from error
        return cls(judge.to(device or "cpu").eval(), processor, mode, **kwargs)

    @classmethod
    def from_card(cls, card: RewardCard, variant: str | None = None, **kwargs) -> VLMJudge:
        arguments = {**card.args, **kwargs}
        model = variant or arguments.pop("model", None) or card.default_variant
        arguments.pop("model", None)
        return cls.from_pretrained(model, name=card.name if variant is None else f"{card.name}:{variant}",
                                   spec=card.spec(), **arguments)

    def answer_token(self, word: str) -> int:
        ids = self.tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1 or ids[0] == self.tokenizer.unk_token_id:
            raise InvalidInputError(
                f"model: the judge's tokenizer has no single {word!r} token (it spells it as {len(ids)} tokens), so "
                "P('Yes') cannot be read from one position. Fix: use mode='likert' or 'numeric', or another judge.")
        return ids[0]

    def check_spelling(self, label: str) -> None:
        ids = self.tokenizer.encode(label, add_special_tokens=False)
        unknown = self.tokenizer.unk_token_id
        if not ids or (unknown is not None and unknown in ids) or self.tokenizer.decode(ids).strip() != label:
            raise InvalidInputError(f"model: the judge's tokenizer cannot write the scale token {label!r}, so its "
                                    f"ratings could never be read. Fix: use another mode or judge.")

    # -- scoring ------------------------------------------------------------------------------

    def inputs(self, images: list, questions: list[str]):
        """The processor's batch for one image (or several, for pairs) and one question each, left
        padded so that every row's next token is its first answer token."""
        from ..prefs.images import as_pil_image  # quantised as everywhere else: round(x·255)

        messages = [[{"role": "user", "content": [*({"type": "image"} for _ in group), {"type": "text", "text": q}]}]
                    for group, q in zip(images, questions)]
        texts = [self.processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
        pil = [as_pil_image(im.reshape(im.shape[-3:]), "samples")  # mixed sizes come as [1,3,H,W] items
               for group in images for im in group]
        self.tokenizer.padding_side = "left"
        return self.processor(text=texts, images=pil, return_tensors="pt", padding=True).to(self.device)

    @torch.no_grad()
    def forward(self, images: Tensor, prompts: list[str]) -> RewardOutput:
        questions = [self.template.format(caption=prompt) for prompt in prompts]
        batch = self.inputs([[image] for image in images], questions)
        if self.mode == "yes-probability":
            logits = self.model(**batch, logits_to_keep=1, use_cache=False).logits[:, -1].float()  # not [B,L,V]
            return RewardOutput(reward=logits.softmax(-1)[:, self.yes_id])
        answers = self.generate(batch)
        if self.mode == "numeric":
            values = [[parse_number(a) for a in row] for row in answers]
            aggregate = lambda found: sum(found) / len(found) if found else None  # noqa: E731
        else:
            values = [[parse_level(a, self.levels) for a in row] for row in answers]
            aggregate = _majority
        scores = [aggregate([v for v in row if v is not None]) for row in values]
        device = self.device
        parsed = torch.tensor([s is not None for s in scores], device=device)
        reward = torch.tensor([float(s) if s is not None else float("nan") for s in scores], device=device)
        valid = torch.tensor([[v is not None for v in row] for row in values], device=device).float().mean(1)
        return RewardOutput(reward=reward, heads={"parsed_fraction": valid}, mask=parsed)

    def generate(self, batch, count: int | None = None, sample: bool | None = None) -> list[list[str]]:
        """``count`` (default ``num_samples``) answers per row, as text; sampled when there are
        several, greedy otherwise."""
        count = count or self.num_samples
        sample = count > 1 if sample is None else sample
        # the judge's own generator, a new seed per call: the caller's global RNG is left as it was,
        # and repeated draws (compare's samples) are not copies of one another
        self.calls += 1
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.generator_seed + self.calls)
            # top_k/top_p reset: Qwen2-VL's generation_config (top_k=1, top_p=0.001) would make every sample greedy
            settings = dict(temperature=self.temperature, top_k=0, top_p=1.0) if sample else {}
            output = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=sample,
                                         num_return_sequences=count, **settings)
        texts = self.tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return [texts[i : i + count] for i in range(0, len(texts), count)]

    @torch.no_grad()
    def compare(self, first, second, prompts, num_samples: int | None = None) -> list[str | None]:
        """Which of two images fits its prompt better: "left" (``first``), "right" (``second``), "tie",
        or None where no answer parsed; the preference store's labels. Each sample shows the pair in an
        order drawn at random; the samples' majority decides."""
        first, prompts = self.prepare(first, prompts)
        second, _ = self.prepare(second, prompts)
        template = load_template("alignment_pairwise_number_scale10")
        votes: list[list[str]] = [[] for _ in prompts]
        draws = num_samples or self.num_samples
        for _ in range(draws):
            swapped = [self.rng.random() < 0.5 for _ in prompts]
            pairs = [[b, a] if swap else [a, b] for a, b, swap in zip(first, second, swapped)]
            batch = self.inputs(pairs, [template.format(caption=p) for p in prompts])
            for index, answers in enumerate(self.generate(batch, count=1, sample=draws > 1)):
                for answer in answers:
                    said = parse_preference(answer)
                    if said is not None:
                        votes[index].append({"tie": "tie", "first": "right" if swapped[index] else "left",
                                             "second": "left" if swapped[index] else "right"}[said])
        return [Counter(v).most_common(1)[0][0] if v else None for v in votes]


def _majority(levels: list[int]) -> int | None:
    if not levels:
        return None
    counts = Counter(levels)
    best = max(counts.values())
    return min(level for level, count in counts.items() if count == best)
