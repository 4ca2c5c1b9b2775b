"""How samples and scores travel between a reward server and its ``remote:`` client: safetensors
bytes (tensors never pickled), with prompts and texts as JSON in the file's metadata."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load, save
from torch import Tensor

from .base import RewardOutput


def encode_request(samples, prompts: list[str] | None) -> bytes:
    tensors = {"samples": samples.detach().cpu().contiguous()} if isinstance(samples, Tensor) else {}
    metadata = {"prompts": json.dumps(prompts)}
    if not isinstance(samples, Tensor):
        metadata["texts"] = json.dumps(list(samples))
    return save(tensors, metadata=metadata)


def decode_request(body: bytes) -> tuple[Tensor | list[str], list[str] | None]:
    metadata = _metadata(body)
    tensors = load(body)
    samples = tensors["samples"] if "samples" in tensors else json.loads(metadata["texts"])
    return samples, json.loads(metadata.get("prompts", "null"))


def encode_output(output: RewardOutput) -> bytes:
    tensors = {"reward": output.reward.detach().float().cpu(), "mask": output.mask.cpu()}
    tensors.update({f"head.{name}": value.detach().float().cpu() for name, value in output.heads.items()})
    if output.uncertainty is not None:
        tensors["uncertainty"] = output.uncertainty.detach().float().cpu()
    return save({k: v.contiguous() for k, v in tensors.items()})


def decode_output(body: bytes) -> RewardOutput:
    tensors = load(body)
    heads = {key[len("head."):]: value for key, value in tensors.items() if key.startswith("head.")}
    return RewardOutput(reward=tensors["reward"], heads=heads, uncertainty=tensors.get("uncertainty"),
                        mask=tensors["mask"].to(torch.bool))


def _metadata(body: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors buffer: its header is 8 bytes of length, then JSON."""
    length = int.from_bytes(body[:8], "little")
    return json.loads(body[8 : 8 + length]).get("__metadata__", {})
