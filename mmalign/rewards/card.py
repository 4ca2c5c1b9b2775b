"""Reward cards: one JSON file per reward, in the spirit of open_clip's model configs.

A card says where the weights come from (and under which licence), what the reward takes and
gives, its normalisation statistics and its known failure modes. Paper constants live here, not
in code. ``family`` names the code that builds the reward (see ``registry.FAMILIES``); ``args``
are passed to it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from .base import RewardSpec

CARD_FILENAME = "reward_card.json"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
FIELD_TYPES = {
    "name": str, "family": str, "description": str, "modality": str, "differentiable": bool, "needs_prompt": bool,
    "output_kind": str, "output_range": (list, tuple), "input_size": int, "normalization": dict, "args": dict,
    "default_variant": str, "source": dict, "license": str, "references": list, "failure_modes": list,
}


@dataclass(frozen=True)
class RewardCard:
    """The parsed card of one reward.

    Args:
        name: the registry name (the file's stem for shipped cards).
        family: which loader builds it ("clip", "aesthetic", "jpeg", ...).
        description: one line for ``mmalign rewards``.
        modality, differentiable, needs_prompt, output_kind, output_range, input_size, resize_mode:
            see :class:`RewardSpec`.
        normalization: ``{"mean": ..., "std": ...}`` of the score, where measured.
        args: keyword arguments for the family's loader.
        default_variant: for families addressed as ``family:variant`` (``clip:ViT-L-14/openai``).
        source: where weights come from (``hf_repo``, ``filename``, ``revision``, ``url``).
        license: licence of the weights.
        references: papers and code the constants come from.
        failure_modes: what the reward is known to get wrong.
        directory: the folder of a ``local-dir:`` card; relative weight paths resolve against it.
    """

    name: str
    family: str
    description: str
    modality: str
    differentiable: bool
    needs_prompt: bool
    output_kind: str = "score"
    output_range: tuple[float, float] | None = None
    input_size: int | None = None
    resize_mode: str | None = None
    normalization: dict[str, float] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)
    default_variant: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    license: str = "unknown"
    references: list[str] = field(default_factory=list)
    failure_modes: list[str] = field(default_factory=list)
    directory: str | None = None

    def spec(self, **overrides) -> RewardSpec:
        """The :class:`RewardSpec` this card declares; loaders override what only the model knows."""
        values = dict(
            modality=self.modality,
            differentiable=self.differentiable,
            needs_prompt=self.needs_prompt,
            output_kind=self.output_kind,
            input_size=self.input_size,
            resize_mode=self.resize_mode,
            output_range=tuple(self.output_range) if self.output_range else None,
            mean=self.normalization.get("mean"),
            std=self.normalization.get("std"),
        )
        values.update(overrides)
        return RewardSpec(**values)

    def resolve_path(self, path: str) -> str:
        """A weight path from the card: ``{package}`` is mmalign's installed folder (for weights that
        ship inside it); other relative paths are relative to a ``local-dir:`` card's folder."""
        if "{package}" in path:
            return path.replace("{package}", str(PACKAGE_DIR))
        if self.directory and not Path(path).is_absolute():
            return str(Path(self.directory) / path)
        return path

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "directory"}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, origin: str, **extra) -> RewardCard:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInputError(f"card {origin}: unknown field(s) {unknown}; known fields are {sorted(known)}.")
        missing = [f for f in ("name", "family", "description", "modality", "differentiable", "needs_prompt") if f not in data]
        if missing:
            raise InvalidInputError(f"card {origin}: missing required field(s) {missing}.")
        for name, kind in FIELD_TYPES.items():
            if name in data and data[name] is not None and not isinstance(data[name], kind):
                raise InvalidInputError(f"card {origin}: field {name!r} must be a {getattr(kind, '__name__', 'list')}, got {data[name]!r}.")
        card = cls(**{**data, **extra})
        card.spec()  # validates modality, output kind and statistics
        return card

    @classmethod
    def from_file(cls, path: str | Path, **extra) -> RewardCard:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise InvalidInputError(f"card {path}: cannot be read as JSON ({error}).") from error
        return cls.from_dict(data, origin=str(path), **extra)
