"""Generators by name: the shipped shapes-world models, local folders and Hugging Face Hub ids."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidInputError, WeightsNotFoundError

SHIPPED_DIR = Path(__file__).resolve().parent / "shapes" / "weights"


@dataclass(frozen=True)
class ShippedModel:
    """A generator that ships with mmalign, and how it is meant to be sampled: steps, guidance and,
    for video models, the clip's size (their pipelines default to far larger ones)."""

    pipeline_class: str
    num_inference_steps: int
    guidance_scale: float
    video_size: dict | None = None


SHIPPED_MODELS = {
    "shapes-sd": ShippedModel("StableDiffusionPipeline", num_inference_steps=25, guidance_scale=3.0),
    "shapes-turbo": ShippedModel("StableDiffusionPipeline", num_inference_steps=1, guidance_scale=0.0),
    "shapes-flow": ShippedModel("StableDiffusion3Pipeline", num_inference_steps=28, guidance_scale=5.0),
    "shapes-video": ShippedModel("WanPipeline", num_inference_steps=20, guidance_scale=4.0,
                                 video_size={"num_frames": 9, "height": 32, "width": 32}),
}


def sampling_defaults(name: str, fallback: dict | None = None) -> dict:
    """``num_inference_steps``, ``guidance_scale`` (and a video model's ``num_frames``, ``height`` and
    ``width``) a shipped model is meant for; for other models ``fallback`` (empty: they get their
    pipeline's own defaults)."""
    shipped = SHIPPED_MODELS.get(name)
    if shipped is None:
        return dict(fallback or {})
    return {"num_inference_steps": shipped.num_inference_steps, "guidance_scale": shipped.guidance_scale,
            **(shipped.video_size or {})}


def resolve_model(name: str) -> str:
    """A shipped model's folder, a local folder, or a hub id, as ``from_pretrained`` takes it."""
    return resolve(name, SHIPPED_MODELS, "model_index.json", "a diffusers pipeline folder", "shipped model")


def resolve(name: str, shipped, marker: str, kind: str, shipped_kind: str) -> str:
    """``name`` as ``from_pretrained`` takes it: the folder of a ``shipped`` model, a local folder
    holding ``marker``, or a hub id."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(f"--model: a model name must be a non-empty string, got {name!r}.")
    if name in shipped:
        folder = SHIPPED_DIR / name
        if not (folder / marker).is_file():
            raise WeightsNotFoundError(
                f"--model: the weights of {name!r} are missing from {folder}. "
                f"Fix: retrain them with `python -m mmalign.shapes.train {name}`, or reinstall mmalign."
            )
        return str(folder)
    if Path(name).expanduser().exists():
        folder = Path(name).expanduser()
        if not (folder / marker).is_file():
            raise InvalidInputError(f"--model: {name!r} is not {kind} (no {marker}).")
        return str(folder)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name.split("/")[0]).is_dir():
        return name  # a hub id; from_pretrained downloads it
    raise InvalidInputError(
        f"--model: {name!r} is neither a {shipped_kind} ({', '.join(shipped)}), an existing folder, "
        "nor a hub id (org/name)."
    )


def load_pipeline(name: str, device: str = "cpu", dtype=None):
    """A diffusers pipeline by name, in fp32 on the CPU unless told otherwise."""
    import torch
    from diffusers import DiffusionPipeline

    path = resolve_model(name)
    try:
        pipeline = DiffusionPipeline.from_pretrained(path, torch_dtype=dtype or torch.float32, **absent_components(path))
    except (OSError, ValueError) as error:
        fix = (f"retrain it with `python -m mmalign.shapes.train {name}`" if name in SHIPPED_MODELS
               else "check the folder or hub id, and your network")
        raise WeightsNotFoundError(f"--model: cannot load {name!r} from {path} ({str(error).splitlines()[0]}). Fix: {fix}.") from error
    if not hasattr(pipeline, "text_encoder"):
        raise InvalidInputError(f"--model: {name!r} is a {type(pipeline).__name__}, not a text-to-image pipeline.")
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def absent_components(path: str) -> dict:
    """``{name: None}`` for each component a local folder saved as absent (``[null, null]``), such as
    SD3's T5, which diffusers otherwise insists on being passed explicitly."""
    index = Path(path) / "model_index.json"
    if not index.is_file():
        return {}
    entries = json.loads(index.read_text())
    return {name: None for name, value in entries.items() if isinstance(value, list) and value == [None, None]}


# Causal LMs of the text path: shipped ones by name; otherwise a transformers folder or hub id.
SHIPPED_LMS = ("shapes-lm",)


def resolve_causal_lm(name: str) -> str:
    """A shipped LM's folder, a local transformers folder, or a hub id, as ``from_pretrained`` takes it."""
    return resolve(name, SHIPPED_LMS, "config.json", "a transformers model folder", "shipped causal LM")


def load_causal_lm(name_or_path: str, device: str = "cpu", dtype=None, trust_remote_code: bool = False):
    """``(model, tokenizer)`` of a causal LM by name, in fp32 on the CPU unless told otherwise, in eval
    mode, with a pad token (EOS when it has none) and left padding, as batched generation needs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_causal_lm(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        fix = (f"retrain it with `python -m mmalign.shapes.train {name_or_path}`" if name_or_path in SHIPPED_LMS
               else "check the folder or hub id, and your network; models with code in their repo need trust_remote_code=True")
        raise WeightsNotFoundError(
            f"--model: cannot load a causal LM from {path} ({str(error).splitlines()[0]}). Fix: {fix}."
        ) from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation continues each prompt from its last real token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


def load_lora(pipeline, directory: str, model: str, adapter_name: str | None = None) -> None:
    """Attach the LoRA a fine-tune saved in ``directory`` (``pytorch_lora_weights.safetensors``) to
    ``pipeline``, the pipeline of ``model``. A folder that does not fit raises, and then the pipeline
    holds no LoRA at all (a half-loaded adapter would silently change every later image)."""
    folder = Path(directory).expanduser()
    if not (folder / "pytorch_lora_weights.safetensors").is_file():
        raise InvalidInputError(f"--lora: {directory!r} holds no pytorch_lora_weights.safetensors "
                                "(the output_dir of `mmalign train` does, once training has finished).")
    from .sampling.pipelines import denoiser

    mismatch = f"--lora: {directory!r} does not fit {model!r}; was it trained on another base model?"
    try:
        pipeline.load_lora_weights(str(folder), adapter_name=adapter_name)
    except (ValueError, RuntimeError, KeyError) as error:
        pipeline.unload_lora_weights()
        raise InvalidInputError(f"{mismatch} ({str(error).splitlines()[0][:200]})") from error
    if not getattr(denoiser(pipeline), "peft_config", None):  # diffusers only warns when no key matches
        pipeline.unload_lora_weights()
        raise InvalidInputError(f"{mismatch} None of its weights matches this model's layers.")
