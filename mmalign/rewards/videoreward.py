"""VideoReward (VideoAlign; Liu et al. 2025, "Improving Video Generation with Human Feedback",
arXiv:2501.13918; official code github.com/KwaiVGI/VideoAlign, weights ``KwaiVGI/VideoReward``).

Qwen2-VL-2B reads the video (sampled at 2 fps, frames at most 448×448 pixels, sides multiples of 28)
and the "detailed_special" prompt, which holds three special tokens, ``<|VQ_reward|>``,
``<|MQ_reward|>`` and ``<|TA_reward|>``. A bias-free linear head (``rm_head``) reads the last hidden
state at each of them: visual quality, motion quality and text alignment (``trainer.py``,
``reward_token="special"``). Each head is z-scored with the checkpoint's ``inference_config``
(VQ 3.6757/2.2476, MQ 1.1646/1.3811, TA 2.8105/2.5121); the overall reward is their sum
(``inference.py``).

The released model ran with plain positions 0…L−1 on all three M-RoPE axes: its forward passed
``position_ids=None`` to the text model of transformers 4.45, which never built video positions.
Positions are passed explicitly here so that newer transformers do not switch to M-RoPE.

The checkpoint (``checkpoint-N/model.pth``) is a PEFT-wrapped state dict: LoRA (r 64, α 128) on the
language model's linear layers. It is read with ``weights_only=True``, its keys are mapped onto
transformers' current Qwen2-VL layout, and each LoRA is merged, ``W + (α/r)·B·A``.

Scores are not differentiable: Qwen2-VL's video processor patches the frames outside autograd.
A wrong frame rate is a known source of silently negative scores (VideoAlign issue #21), so a
sampling fps other than the card's warns.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InvalidInputError, WeightsNotFoundError
from .base import Reward, RewardOutput, RewardSpec
from .card import RewardCard
from .checkpoints import load_exact, read_state_dict

HEADS = ("VQ", "MQ", "TA")
REWARD_TOKENS = tuple(f"<|{head}_reward|>" for head in HEADS)
TEMPLATE = Path(__file__).resolve().parent / "judge_templates" / "videoalign_detailed_special.txt"
FRAME_FACTOR, PIXEL_FACTOR, MIN_FRAMES, MAX_FRAMES = 2, 28, 4, 768  # qwen_vl_utils' FRAME_FACTOR, IMAGE_FACTOR, FPS_MIN/MAX_FRAMES
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEOREWARD_SPEC = RewardSpec(modality="video", differentiable=False, needs_prompt=True, output_kind="score")


def frame_indices(num_frames: int, video_fps: float, fps: float) -> Tensor:
    """qwen_vl_utils' ``smart_nframes`` and uniform sampling: ``T / video_fps · fps`` frames, an even
    number, at least 4, at most T and 768, spread evenly from the first frame to the last."""
    if num_frames < MIN_FRAMES:
        raise InvalidInputError(f"samples: a video of {num_frames} frame(s); VideoReward needs at least {MIN_FRAMES}. "
                                "Fix: pass longer videos.")
    wanted = num_frames / video_fps * fps
    low = math.ceil(MIN_FRAMES / FRAME_FACTOR) * FRAME_FACTOR
    high = min(MAX_FRAMES, num_frames) // FRAME_FACTOR * FRAME_FACTOR
    count = int(min(max(round(wanted / FRAME_FACTOR) * FRAME_FACTOR, low), high))
    return torch.linspace(0, num_frames - 1, count).round().long()


def frame_size(height: int, width: int, max_pixels: int, min_pixels: int = VIDEO_MIN_PIXELS) -> tuple[int, int]:
    """qwen_vl_utils' ``smart_resize``: sides rounded to multiples of 28, the aspect ratio kept, the
    area brought inside ``[min_pixels, max_pixels]``."""
    new_h = max(PIXEL_FACTOR, round(height / PIXEL_FACTOR) * PIXEL_FACTOR)
    new_w = max(PIXEL_FACTOR, round(width / PIXEL_FACTOR) * PIXEL_FACTOR)
    if new_h * new_w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        new_h = max(PIXEL_FACTOR, math.floor(height / beta / PIXEL_FACTOR) * PIXEL_FACTOR)
        new_w = max(PIXEL_FACTOR, math.floor(width / beta / PIXEL_FACTOR) * PIXEL_FACTOR)
    elif new_h * new_w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        new_h = math.ceil(height * beta / PIXEL_FACTOR) * PIXEL_FACTOR
        new_w = math.ceil(width * beta / PIXEL_FACTOR) * PIXEL_FACTOR
    return new_h, new_w


def merge_peft_state_dict(state_dict: dict[str, Tensor], scale: float) -> dict[str, Tensor]:
    """A PEFT-wrapped state dict of the transformers-4.45 layout as a plain one of today's: LoRA
    merged (``W + scale·B·A``), ``base_layer`` unwrapped, ``visual.`` under ``model.`` and the
    language model under ``model.language_model.``."""
    plain, lora_a, lora_b = {}, {}, {}
    for key, value in state_dict.items():
        key = key.removeprefix("base_model.model.")
        if ".lora_A." in key:
            lora_a[re.sub(r"\.lora_A\.[^.]+\.weight$", "", key)] = value
        elif ".lora_B." in key:
            lora_b[re.sub(r"\.lora_B\.[^.]+\.weight$", "", key)] = value
        else:
            plain[key.replace(".base_layer.", ".")] = value
    for module, down in lora_a.items():
        weight = plain[f"{module}.weight"]
        plain[f"{module}.weight"] = (weight.float() + scale * (lora_b[module].float() @ down.float())).to(weight.dtype)
    renamed = {}
    for key, value in plain.items():
        if key.startswith("visual."):
            key = "model." + key
        elif key.startswith("model.") and not key.startswith(("model.visual.", "model.language_model.")):
            key = "model.language_model." + key[len("model."):]
        renamed[key] = value
    return renamed


class VideoReward(Reward):
    """VideoAlign's VQ, MQ and TA heads, z-scored, and their sum, for videos ``[B,T,3,H,W]`` in [0,1]
    at ``video_fps`` frames per second.

    Example:
        >>> reward = load_reward("videoreward", video_fps=16)        # doctest: +SKIP
        >>> reward(videos, prompts).heads["MQ"]                        # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, processor, rm_head: nn.Linear, normalization: dict[str, tuple[float, float]],
                 *, fps: float = 2.0, expected_fps: float = 2.0, video_fps: float | None = None,
                 max_frame_pixels: int = 448 * 448, min_frame_pixels: int = VIDEO_MIN_PIXELS, spec: RewardSpec = VIDEOREWARD_SPEC, name: str = "videoreward"):
        super().__init__(spec.replace(differentiable=False), name)
        if video_fps is None:
            warnings.warn(f"video_fps: not given, so videos are taken to be at {fps:g} fps already and every frame is "
                          "used. Pass the frame rate of your videos (load_reward('videoreward', video_fps=16)); a wrong "
                          "rate gives silently wrong scores (VideoAlign issue #21).", UserWarning, stacklevel=2)
        if fps != expected_fps:
            warnings.warn(f"VideoReward was trained on frames sampled at {expected_fps:g} fps; sampling at {fps:g} fps "
                          "is known to give silently negative scores (VideoAlign issue #21).", UserWarning, stacklevel=2)
        self.model, self.processor, self.rm_head = model, processor, rm_head
        self.normalization = {head: tuple(map(float, normalization[head])) for head in HEADS}
        self.fps, self.video_fps = float(fps), float(video_fps or fps)
        self.max_frame_pixels, self.min_frame_pixels = int(max_frame_pixels), int(min_frame_pixels)
        tokenizer = processor.tokenizer
        self.token_ids = [tokenizer.convert_tokens_to_ids(token) for token in REWARD_TOKENS]
        if any(i is None or i == tokenizer.unk_token_id for i in self.token_ids):
            raise InvalidInputError(f"tokenizer: lacks VideoReward's special tokens {', '.join(REWARD_TOKENS)}. Fix: use "
                                    "the tokenizer saved with the checkpoint (checkpoint-N/tokenizer).")
        self.template = TEMPLATE.read_text(encoding="utf-8")
        self.freeze()

    @classmethod
    def from_checkpoint(cls, checkpoint: str, base: str = "Qwen/Qwen2-VL-2B-Instruct", *, device: str | None = None,
                        dtype: torch.dtype | None = None, **kwargs) -> VideoReward:
        """The folder of VideoAlign's release (``model_config.json`` and ``checkpoint-N/{model.pth,
        tokenizer/}``, the highest N) on the architecture of ``base`` (its config and processor)."""
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        folder = Path(checkpoint)
        steps = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
        if not (folder / "model_config.json").is_file() or not steps or not (steps[-1] / "model.pth").is_file():
            raise WeightsNotFoundError(f"checkpoint: {checkpoint!r} is not a VideoReward release (model_config.json and "
                                       "checkpoint-N/model.pth). Fix: download hf-hub:KwaiVGI/VideoReward and pass its folder.")
        config = json.loads((folder / "model_config.json").read_text())
        lora = config.get("peft_lora_config", {})
        data = config.get("data_config", {})
        processor = AutoProcessor.from_pretrained(base)
        tokenizer_dir = steps[-1] / "tokenizer"
        if tokenizer_dir.is_dir():
            from transformers import AutoTokenizer

            processor.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        architecture = AutoConfig.from_pretrained(base)
        model = AutoModelForImageTextToText.from_config(architecture, dtype=dtype or torch.float32)
        model.resize_token_embeddings(len(processor.tokenizer))
        rm_head = nn.Linear(model.config.get_text_config().hidden_size, 1, bias=False)
        state = merge_peft_state_dict(read_state_dict(steps[-1] / "model.pth"),
                                      lora.get("lora_alpha", 128) / lora.get("lora_r", 64))
        head = state.pop("rm_head.weight", None)
        if head is None:
            raise WeightsNotFoundError(f"checkpoint: {steps[-1] / 'model.pth'} holds no rm_head.weight; it is not a "
                                       "VideoReward model.")
        load_exact(model, state, source=str(steps[-1] / "model.pth"), ignore=("lm_head.",))
        rm_head.weight.data.copy_(head.to(rm_head.weight.dtype))
        inference = config.get("inference_config") or {}
        normalization = {h: (inference.get(f"{h}_mean", 0.0), inference.get(f"{h}_std", 1.0)) for h in HEADS}
        kwargs.setdefault("normalization", normalization)
        kwargs.setdefault("max_frame_pixels", data.get("max_frame_pixels", 448 * 448))
        return cls(model.to(device or "cpu").eval(), processor, rm_head.to(device or "cpu"), **kwargs)

    @classmethod
    def from_card(cls, card: RewardCard, variant: str | None = None, *, checkpoint: str | None = None,
                  **kwargs) -> VideoReward:
        """``checkpoint``: a local copy of the release; without it the card's hub repo is downloaded."""
        if checkpoint is None:
            from .hub import download_repo

            checkpoint = str(download_repo(card.source["hf_repo"], card.source.get("revision")))
        arguments = {**card.args, **kwargs}
        arguments["normalization"] = {h: tuple(v) for h, v in arguments.pop("normalization").items()}
        return cls.from_checkpoint(checkpoint, spec=card.spec(), name=card.name, **arguments)

    def frames(self, video: Tensor) -> Tensor:
        """One video ``[T,3,H,W]`` as the model sees it: frames sampled at ``fps``, resized (bicubic,
        antialiased) to sides of multiples of 28 within the pixel budget."""
        video = video[frame_indices(video.shape[0], self.video_fps, self.fps).to(video.device)]
        size = frame_size(*video.shape[-2:], self.max_frame_pixels, self.min_frame_pixels)
        if tuple(video.shape[-2:]) != size:
            video = F.interpolate(video.float(), size=size, mode="bicubic", antialias=True, align_corners=False)
        return video.clamp(0, 1)

    @torch.no_grad()
    def forward(self, videos: Tensor, prompts: list[str]) -> RewardOutput:
        device = next(self.model.parameters()).device
        clips = [self.frames(video.float()).cpu() for video in videos]
        messages = [[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": self.template.format(text_prompt=p)}]}]
                    for p in prompts]
        texts = [self.processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
        self.processor.tokenizer.padding_side = "right"
        batch = self.processor(text=texts, videos=clips, return_tensors="pt", padding=True,
                               videos_kwargs={"do_rescale": False, "do_sample_frames": False}).to(device)
        length = batch.input_ids.shape[1]
        positions = torch.arange(length, device=device).view(1, 1, length).expand(3, len(texts), length)
        hidden = self.model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                  pixel_values_videos=batch.pixel_values_videos, video_grid_thw=batch.video_grid_thw,
                                  position_ids=positions).last_hidden_state
        scores = self.rm_head(hidden.to(self.rm_head.weight.dtype)).squeeze(-1).float()  # [B, L]
        heads = {}
        for head, token, token_id in zip(HEADS, REWARD_TOKENS, self.token_ids):
            where = batch.input_ids == token_id
            if not (where.sum(1) == 1).all():
                raise InvalidInputError(f"prompts: each must leave exactly one {token} in the text; a prompt that "
                                        "contains VideoReward's special tokens cannot be scored.")
            mean, std = self.normalization[head]
            heads[head] = (scores[where] - mean) / std
        return RewardOutput(reward=sum(heads.values()), heads=heads)
