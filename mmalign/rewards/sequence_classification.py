"""Learned text reward models: any transformers ``AutoModelForSequenceClassification`` with one logit.

Such a model is trained with the Bradley–Terry loss ``-log σ(r(x, y_w) - r(x, y_l))`` on preference
pairs (Bradley & Terry 1952; Ouyang et al. 2022, InstructGPT §3.5), and its single logit is the
reward. Real reward models differ in how they want their input, and getting it wrong gives
plausible-looking but wrong scores, so this class handles the three usual traps explicitly:

- **input format.** A tokenizer with a chat template (Skywork-Reward, ArmoRM, most Llama/Qwen
  RMs) gets ``[user prompt, assistant completion]`` rendered by the template, then tokenized
  *without* adding special tokens again, since the template already holds BOS (doubling it shifts
  the scores). A tokenizer without one (OpenAssistant/reward-model-deberta-v3-large-v2) gets the
  (question, answer) pair encoding its model card uses: ``tokenizer(question, answer)``.
- **padding side.** Set per call, explicitly. Decoder RMs pool the last non-pad token, which
  transformers finds on either side, so their scores do not depend on it (the tests check this);
  encoder RMs (BERT, DeBERTa) pool the first token, so left padding would make them score a pad
  token, and it is refused for them.
- **pad token.** Llama-style tokenizers often have none, and the model then refuses batches; it
  falls back to the model config's pad id, then EOS, then SEP, and the model config is told.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InvalidInputError, MMAlignError, WeightsNotFoundError
from .base import RewardOutput, RewardSpec
from .card import RewardCard
from .text import TextReward, prompt_messages, prompt_text

RM_SPEC = RewardSpec(modality="text", differentiable=False, needs_prompt=True, output_kind="logit")
INPUT_FORMATS = ("auto", "chat", "pair", "concat")


def pools_last_token(model) -> bool:
    """Whether a sequence classifier reads its last non-pad token (decoder-only models) rather than
    the first one (BERT-like encoders, which transformers also lists among causal LMs)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = getattr(model.config, "model_type", "")
    encoder_like = any(key in model_type for key in ("bert", "electra", "ernie"))
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not encoder_like


def ensure_pad_token(tokenizer, model) -> None:
    """Give ``tokenizer`` a pad token when it has none, and tell ``model.config`` its id."""
    if tokenizer.pad_token_id is None:
        configured = getattr(model.config, "pad_token_id", None)
        fallback = (tokenizer.convert_ids_to_tokens(configured) if configured is not None and configured < len(tokenizer)
                    else tokenizer.eos_token or tokenizer.sep_token)
        if fallback is None:
            raise InvalidInputError(
                "tokenizer: has no pad, eos or sep token to pad batches with. "
                "Fix: set tokenizer.pad_token before building the reward."
            )
        tokenizer.pad_token = fallback
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # the model pools the last token that is not this


class SequenceClassificationReward(TextReward):
    """The logit of a sequence-classification reward model for each (prompt, completion).

    Args:
        model: an ``AutoModelForSequenceClassification`` model.
        tokenizer: its tokenizer.
        input_format: "auto" (the chat template if the tokenizer has one, else "pair"), "chat",
            "pair" (``tokenizer(prompt, completion)``) or "concat" (``prompt + completion``).
        padding_side: "right" or "left"; a decoder RM's scores do not depend on it, and encoder RMs
            (which read the first token) refuse "left".
        batch_size: completions per forward pass.
        max_length: truncate longer inputs to this many tokens (None: never truncate).
        label: which logit is the score when the model has several (None: the model must have one).
    """

    def __init__(self, model, tokenizer, *, input_format: str = "auto", padding_side: str = "right",
                 batch_size: int = 16, max_length: int | None = None, label: int | None = None,
                 spec: RewardSpec = RM_SPEC, name: str | None = None):
        if input_format not in INPUT_FORMATS:
            raise InvalidInputError(f"input_format: {input_format!r} is not one of {INPUT_FORMATS}.")
        if padding_side not in ("left", "right"):
            raise InvalidInputError(f"padding_side: must be 'left' or 'right', got {padding_side!r}.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size: must be a positive int, got {batch_size!r}.")
        num_labels = model.config.num_labels
        if label is None and num_labels != 1:
            raise InvalidInputError(
                f"label: the model has {num_labels} logits, not one reward logit. Fix: pass label=<index of the "
                "logit that is the score>, or use a reward model trained with num_labels=1."
            )
        if label is not None and not 0 <= label < num_labels:
            raise InvalidInputError(f"label: must lie in 0..{num_labels - 1}, got {label}.")
        if padding_side == "left" and not pools_last_token(model):
            raise InvalidInputError(
                f"padding_side: 'left' puts pad tokens first, where a {type(model).__name__} reads its score "
                "(the first token). Fix: use padding_side='right'."
            )
        if input_format == "chat" and not tokenizer.chat_template:
            raise InvalidInputError("input_format: 'chat' needs a tokenizer with a chat_template; this one has none. Fix: use 'pair'.")
        super().__init__(spec, name or getattr(model.config, "_name_or_path", None) or type(model).__name__)
        ensure_pad_token(tokenizer, model)
        self.model = model
        self.tokenizer = tokenizer
        self.input_format = ("chat" if tokenizer.chat_template else "pair") if input_format == "auto" else input_format
        self.padding_side, self.batch_size, self.max_length, self.label = padding_side, batch_size, max_length, label
        self.freeze()

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str, *, trust_remote_code: bool = False, device=None,
                        dtype: torch.dtype | None = None, revision: str | None = None, **kwargs) -> SequenceClassificationReward:
        """Load a reward model folder or hub id; ``trust_remote_code`` stays off unless asked for."""
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        source = str(path_or_hub_id)
        options = dict(trust_remote_code=trust_remote_code, revision=revision)
        try:
            config = AutoConfig.from_pretrained(source, **options)
            architectures = config.architectures or []
            if not any(a.endswith("ForSequenceClassification") for a in architectures):
                raise InvalidInputError(
                    f"model: {source!r} is a {', '.join(architectures) or 'model'} checkpoint, not a sequence-classification "
                    "reward model, so its score head would be randomly initialised. Fix: point at a reward model."
                )
            tokenizer = AutoTokenizer.from_pretrained(source, **options)
            model = AutoModelForSequenceClassification.from_pretrained(source, dtype=dtype or torch.float32, **options)
        except MMAlignError:
            raise
        except (OSError, ValueError) as error:  # missing folder, unknown hub id, offline, bad files
            where = "the folder" if Path(source).expanduser().exists() else "the hub id and your network"
            raise WeightsNotFoundError(
                f"model: cannot load a reward model from {source!r} ({str(error).splitlines()[0]}). "
                f"Fix: check {where}, or download it elsewhere and pass its local folder."
            ) from error
        return cls(model.to(device or "cpu"), tokenizer, **kwargs)

    @classmethod
    def from_card(cls, card: RewardCard, variant: str | None = None, **kwargs) -> SequenceClassificationReward:
        args = {**card.args, **kwargs}
        model = variant or args.pop("model", None) or card.default_variant
        args.pop("model", None)
        if model is None:
            raise InvalidInputError(f"card {card.name}: args.model must name the reward model's folder or hub id.")
        path = card.resolve_path(model)
        if "{package}" in model and not (Path(path) / "config.json").is_file():
            retrain = card.source.get("retrain")
            raise WeightsNotFoundError(
                f"reward {card.name!r}: no weights in {path}. Fix: "
                f"{f'retrain them with `{retrain}`' if retrain else 'reinstall mmalign'}."
            )
        reward = cls.from_pretrained(path, **args, spec=card.spec())
        reward.name = card.name if variant is None else f"{card.name}:{variant}"
        return reward

    def texts(self, completions: list[str], prompts: list) -> list[str] | tuple[list[str], list[str]]:
        """What the tokenizer is given: rendered chats, ``(prompts, completions)`` for pair input, or
        concatenations."""
        if self.input_format == "chat":
            return [self.tokenizer.apply_chat_template(prompt_messages(p) + [{"role": "assistant", "content": c}],
                                                       tokenize=False) for p, c in zip(prompts, completions)]
        if self.input_format == "pair":
            return [prompt_text(p) for p in prompts], list(completions)
        return [prompt_text(p) + c for p, c in zip(prompts, completions)]

    def tokenize(self, completions: list[str], prompts: list) -> dict[str, torch.Tensor]:
        texts = self.texts(completions, prompts)
        pair = isinstance(texts, tuple)
        return self.tokenizer(
            *(texts if pair else (texts,)), return_tensors="pt", padding=True, padding_side=self.padding_side,
            truncation=self.max_length is not None, max_length=self.max_length,
            add_special_tokens=self.input_format != "chat",  # a chat template already holds BOS and friends
        ).to(self.device)

    def forward(self, completions: list[str], prompts: list) -> RewardOutput:
        scores = []
        for start in range(0, len(completions), self.batch_size):
            end = start + self.batch_size
            logits = self.model(**self.tokenize(completions[start:end], prompts[start:end])).logits
            scores.append(logits[:, 0 if self.label is None else self.label].float())
        return RewardOutput(reward=torch.cat(scores))
