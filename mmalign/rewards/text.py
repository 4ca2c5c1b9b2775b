"""Text rewards: the shared handling of completions and prompts, and exact-answer verifiers.

Text samples are completions, each a string or a chat-message list (``[{"role": "assistant",
"content": ...}]``, as TRL passes conversational completions); prompts are strings or chat-message
lists too. :class:`TextReward` turns both into checked lists once, so every text reward sees the
same thing whichever format the caller uses.

:class:`ExactAnswerVerifier` is the rule-based reward of RLVR-style training (Lambert et al. 2024,
Tülu 3 "reinforcement learning with verifiable rewards"; DeepSeek-R1's accuracy reward): 1.0 when
the completion states exactly the prompt's answer, 0.0 when it states anything else, and NaN
(masked) when the prompt has no checkable answer, never a silent 0.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Sequence

import torch

from ..errors import InvalidInputError
from .base import Reward, RewardOutput, RewardSpec
from .card import RewardCard

VERIFIER_SPEC = RewardSpec(modality="text", differentiable=False, needs_prompt=True, output_kind="score",
                           output_range=(0.0, 1.0))
# task -> the module giving ``answer(prompt)`` (raising InvalidInputError for a prompt that is not
# the task's) and ``extract_answer(completion)``. A card names a task, never a module, so that a
# card cannot import arbitrary code.
TASKS = {"arithmetic": "mmalign.shapes.arithmetic"}


def is_chat(item) -> bool:
    """Whether ``item`` is a chat-message list: dicts with a "content" (and usually a "role")."""
    return isinstance(item, list) and len(item) > 0 and all(isinstance(m, dict) and "content" in m for m in item)


def completion_text(sample) -> str:
    """A completion as a string: itself, or the content of a chat's last assistant message."""
    if isinstance(sample, str):
        return sample
    if is_chat(sample):
        replies = [m for m in sample if m.get("role", "assistant") == "assistant"]
        content = (replies or sample)[-1]["content"]
        if isinstance(content, str):
            return content
    raise InvalidInputError(
        "samples: each text sample must be a string or a chat-message list like "
        f"[{{'role': 'assistant', 'content': '...'}}], got {_describe(sample)}."
    )


def prompt_messages(prompt) -> list[dict]:
    """A prompt as chat messages: a string becomes one user message; a chat passes through."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if is_chat(prompt):
        return [dict(m) for m in prompt]
    raise InvalidInputError(
        "prompts: each text prompt must be a string or a chat-message list like "
        f"[{{'role': 'user', 'content': '...'}}], got {_describe(prompt)}."
    )


def prompt_text(prompt) -> str:
    """A prompt as a string: itself, or the content of a chat's last user message."""
    messages = prompt_messages(prompt)
    users = [m for m in messages if m.get("role") == "user"]
    return str((users or messages)[-1]["content"])


def _describe(item) -> str:
    text = repr(item)
    return f"{type(item).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


class TextReward(Reward):
    """Base of the text rewards: ``forward`` gets completions as strings and prompts as strings or
    chat-message lists (one per completion, or None when the reward needs none)."""

    def prepare(self, samples, prompts=None):
        if isinstance(samples, str) or is_chat(samples):
            samples = [samples]  # one completion
        if not isinstance(samples, Sequence) or isinstance(samples, (bytes, torch.Tensor)):
            raise InvalidInputError(
                f"samples: text rewards take a list of strings or chat-message lists, got {type(samples).__name__}. "
                "Fix: decode generated token ids with tokenizer.batch_decode(..., skip_special_tokens=True) first."
            )
        if len(samples) == 0:
            raise InvalidInputError("samples: got an empty batch.")
        completions = [completion_text(s) for s in samples]
        if prompts is None:
            if self.spec.needs_prompt:
                raise InvalidInputError(f"prompts: reward {self.name!r} scores completions against their prompt; pass `prompts=`.")
            return completions, None
        if isinstance(prompts, str) or is_chat(prompts):
            prompts = [prompts] * len(completions)  # one prompt for the whole batch
        if not isinstance(prompts, Sequence) or len(prompts) != len(completions):
            raise InvalidInputError(
                f"prompts: got {len(prompts) if isinstance(prompts, Sequence) else type(prompts).__name__} prompts for "
                f"{len(completions)} samples. Fix: pass one prompt per sample, or a single one for all of them."
            )
        for prompt in prompts:
            prompt_messages(prompt)  # checks each prompt's type
        return completions, list(prompts)


class ExactAnswerVerifier(TextReward):
    """1.0 if the completion's answer equals the prompt's exact answer, 0.0 if not, NaN (masked)
    when the prompt is not one of the task's (for example a chat turn without arithmetic).

    Args:
        task: which checkable task defines answers (a key of :data:`TASKS`, e.g. "arithmetic").
        strict: raise :class:`InvalidInputError` on a prompt outside the task instead of NaN.

    Example:
        >>> from mmalign.rewards import load_reward
        >>> verifier = load_reward("shapes-arithmetic-verifier")
        >>> verifier(["168", "167"], ["123+45=", "123+45="]).reward.tolist()
        [1.0, 0.0]
    """

    def __init__(self, task: str = "arithmetic", strict: bool = False, spec: RewardSpec = VERIFIER_SPEC,
                 name: str | None = None):
        if task not in TASKS:
            raise InvalidInputError(f"task: {task!r} is not a known verifiable task; known tasks are {sorted(TASKS)}.")
        super().__init__(spec, name or f"{task}-verifier")
        self.task_name, self.strict = task, strict
        self.freeze()

    @property
    def task(self):
        """The task's module, imported on use so that the reward pickles (TRL may send it to workers)."""
        return importlib.import_module(TASKS[self.task_name])

    @classmethod
    def from_card(cls, card: RewardCard, variant: str | None = None, device=None, **kwargs) -> ExactAnswerVerifier:
        # ``device`` is accepted like every loader's; checking strings needs no device.
        return cls(**{**card.args, **kwargs}, spec=card.spec(), name=card.name)

    def forward(self, completions: list[str], prompts: list) -> RewardOutput:
        scores = []
        for completion, prompt in zip(completions, prompts):
            try:
                expected = self.task.answer(prompt_text(prompt))
            except InvalidInputError:
                if self.strict:
                    raise
                scores.append(float("nan"))
                continue
            scores.append(float(self.task.extract_answer(completion) == expected))
        reward = torch.tensor(scores, dtype=torch.float32)
        if torch.isnan(reward).all():
            warnings.warn(
                f"reward {self.name!r}: no prompt in this batch has a checkable answer (first: "
                f"{prompt_text(prompts[0])!r}), so every score is NaN. Fix: pass the task's prompts, "
                "for example '123+45=' from mmalign.shapes.arithmetic.arithmetic_prompts."
            )
        return RewardOutput(reward=reward)
