"""LoRA adapters through peft, on a diffusers denoiser or a transformers causal LM, saved where each
library's stock loader finds them: ``pipe.load_lora_weights(dir)`` and ``PeftModel.from_pretrained(model, dir)``.

The adapter lives inside the model, so the reference policy of D3PO, PRDP and Flow-DPO is the same
model with its adapter disabled, never a second copy.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from ..errors import InvalidInputError

# diffusers' train_text_to_image_lora.py adapts the attention projections.
DIFFUSERS_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
ADAPTER = "default"


def add_lora(model, rank: int, alpha: float | None = None, target_modules=None):
    """Freeze ``model`` and attach one trainable LoRA adapter. A diffusers model carries it itself
    and is returned; a transformers model comes back as peft's ``PeftModel`` around it (transformers'
    own ``add_adapter`` may demand a newer peft than is installed)."""
    from peft import LoraConfig, get_peft_model

    is_diffusers = type(model).__module__.startswith("diffusers.")
    targets = target_modules or (DIFFUSERS_TARGETS if is_diffusers else "all-linear")
    model.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian" if is_diffusers else True,
                        target_modules=targets, task_type=None if is_diffusers else "CAUSAL_LM")
    try:
        if not is_diffusers:
            return get_peft_model(model, config)
        model.add_adapter(config)
    except ValueError as error:
        raise InvalidInputError(f"target_modules: cannot place LoRA on {type(model).__name__} ({error}).") from error
    return model


def has_lora(model) -> bool:
    return bool(getattr(model, "peft_config", None))


def save_diffusers_lora(pipeline, model, directory: Path) -> Path:
    """Write ``pytorch_lora_weights.safetensors`` for the stock ``load_lora_weights`` of ``pipeline``'s
    family, with the adapter's config as metadata so that ``lora_alpha`` survives the round trip."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    from ..sampling.pipelines import stock_pipeline

    save = type(stock_pipeline(pipeline)).save_lora_weights
    prefix = "unet" if getattr(pipeline, "unet", None) is not None else "transformer"
    kwargs = {f"{prefix}_lora_layers": convert_state_dict_to_diffusers(get_peft_model_state_dict(model))}
    if f"{prefix}_lora_adapter_metadata" in inspect.signature(save).parameters:
        kwargs[f"{prefix}_lora_adapter_metadata"] = model.peft_config[ADAPTER].to_dict()
    save(str(directory), safe_serialization=True, **kwargs)
    return Path(directory) / "pytorch_lora_weights.safetensors"
