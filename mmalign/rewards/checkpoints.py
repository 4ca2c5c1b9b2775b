"""Reading reward weights safely, and putting them into a model only when every key fits.

Weights load through safetensors or ``torch.load(weights_only=True)``: a file that holds more than
tensors (a pickled model object, code) is refused, never executed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import CheckpointMismatchError, WeightsNotFoundError
from .hub import download_file


def read_state_dict(path: str | Path, fix: str = "check the path") -> dict[str, Tensor]:
    """Weights from ``.safetensors``, or from a torch file read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights: {str(path)!r} does not exist. Fix: {fix}.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt, or a pickle that is more than weights: name the file
        raise WeightsNotFoundError(
            f"weights: {str(path)!r} cannot be read as safetensors or as a weights-only torch file ({error})."
        ) from error


def card_weights(path: str | None, source: dict, argument: str = "checkpoint") -> str:
    """The weight file a user named, else the one the card's ``source`` names on the Hub."""
    if path:
        return str(path)
    if "hf_repo" not in source or "filename" not in source:
        raise WeightsNotFoundError(f"{argument}: the card names no weight file; pass `{argument}=PATH`.")
    return download_file(source["hf_repo"], source["filename"], source.get("revision"))


def load_exact(model: nn.Module, state_dict: dict[str, Tensor], source: str, ignore=()) -> None:
    """``model.load_state_dict`` that names what does not fit: missing and unexpected keys (up to
    ten of each) and shape mismatches. Keys starting with an ``ignore`` prefix may be absent or extra."""
    expected = model.state_dict()
    skip = lambda key: key.startswith(tuple(ignore))  # noqa: E731
    missing = sorted(k for k in expected if k not in state_dict and not skip(k))
    unexpected = sorted(k for k in state_dict if k not in expected and not skip(k))
    shapes = sorted(f"{k} {tuple(state_dict[k].shape)} ≠ {tuple(expected[k].shape)}"
                    for k in state_dict if k in expected and state_dict[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        listed = lambda keys: ", ".join(keys[:10]) + (f" (+{len(keys) - 10} more)" if len(keys) > 10 else "")  # noqa: E731
        parts = [f"{len(missing)} missing key(s): {listed(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected key(s): {listed(unexpected)}" if unexpected else "",
                 f"{len(shapes)} shape mismatch(es): {listed(shapes)}" if shapes else ""]
        raise CheckpointMismatchError(
            f"checkpoint {source}: does not fit {type(model).__name__}; " + "; ".join(p for p in parts if p)
            + ". Fix: pass the checkpoint the card names, or the architecture it was trained with.")
    model.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=False)
