"""Rewards by name: ``load_reward(name)`` and ``list_rewards()`` over the cards in ``rewards/``.

Names resolve like open_clip's:

- ``"laion-aesthetic"``: a shipped card, by its file's stem;
- ``"clip:ViT-H-14/laion2b_s32b_b79k"``: a family card (``clip``) with a variant;
- ``"local-dir:/path"``: a folder holding ``reward_card.json`` and its weights, an open_clip
  folder (``open_clip_config.json``), which loads as a CLIP score, or a transformers
  ``*ForSequenceClassification`` folder, which loads as a text reward model;
- ``"hf-hub:org/repo[@revision]"``: the same, downloaded from the Hugging Face Hub;
- ``"remote:host:port"``: a reward served over HTTP by ``mmalign serve-reward``.

A card can only name a family listed in :data:`FAMILIES`, so a card never imports arbitrary code.
"""

from __future__ import annotations

import difflib
import importlib
import json
from functools import lru_cache
from pathlib import Path

from .._resources import resource_dir
from ..errors import InvalidInputError, UnknownRewardError
from .base import Reward
from .card import CARD_FILENAME, RewardCard
from .hub import download_repo

# family -> "module:Class"; the class builds a reward with ``from_card(card, variant, **kwargs)``.
FAMILIES = {
    "clip": "mmalign.rewards.clip:CLIPScore",
    "aesthetic": "mmalign.rewards.aesthetic:AestheticScore",
    "hps": "mmalign.rewards.hps:HPSv2Score",
    "pickscore": "mmalign.rewards.pickscore:PickScore",
    "imagereward": "mmalign.rewards.imagereward:ImageReward",
    "vlm-judge": "mmalign.rewards.vlm_judge:VLMJudge",
    "videoreward": "mmalign.rewards.videoreward:VideoReward",
    "shapes-video": "mmalign.rewards.shapes_video:ShapesVideoReward",
    "shapes-object": "mmalign.rewards.shapes_object:ShapesObjectScore",
    "jpeg": "mmalign.rewards.jpeg:JPEGSize",
    "verifier": "mmalign.rewards.text:ExactAnswerVerifier",
    "sequence-classification": "mmalign.rewards.sequence_classification:SequenceClassificationReward",
}
LOCAL_DIR = "local-dir:"
REMOTE = "remote:"
HF_HUB = "hf-hub:"
OPEN_CLIP_CONFIG = "open_clip_config.json"
TRANSFORMERS_CONFIG = "config.json"


@lru_cache(maxsize=1)
def _shipped_cards() -> dict[str, RewardCard]:
    cards = {}
    for path in sorted(resource_dir("cards").glob("*.json")):
        card = RewardCard.from_file(path)
        if card.name != path.stem:
            raise InvalidInputError(f"card {path}: its name {card.name!r} must equal its file name {path.stem!r}.")
        cards[card.name] = card
    return cards


def list_rewards() -> list[RewardCard]:
    """Every shipped reward's card, sorted by name."""
    return list(_shipped_cards().values())


def card_from_directory(directory: str | Path) -> RewardCard:
    """The card of a ``local-dir:`` folder; an open_clip folder without a card is a CLIP score."""
    directory = Path(directory).expanduser().resolve()
    if not directory.is_dir():
        raise UnknownRewardError(f"name: local-dir {str(directory)!r} is not a folder.")
    if (directory / CARD_FILENAME).is_file():
        return RewardCard.from_file(directory / CARD_FILENAME, directory=str(directory))
    if (directory / OPEN_CLIP_CONFIG).is_file():
        clip = _shipped_cards()["clip"]
        return RewardCard.from_dict(
            {**clip.to_dict(), "name": f"{LOCAL_DIR}{directory}", "default_variant": f"{LOCAL_DIR}{directory}"},
            origin=str(directory),
            directory=str(directory),
        )
    if _is_sequence_classifier(directory / TRANSFORMERS_CONFIG):
        base = _shipped_cards()["sequence-classification"]
        return RewardCard.from_dict(
            {**base.to_dict(), "name": f"{LOCAL_DIR}{directory}", "args": {**base.args, "model": str(directory)}},
            origin=str(directory),
            directory=str(directory),
        )
    raise UnknownRewardError(
        f"name: {str(directory)!r} holds neither {CARD_FILENAME}, {OPEN_CLIP_CONFIG}, nor a "
        f"sequence-classification {TRANSFORMERS_CONFIG}. "
        f"Fix: add a {CARD_FILENAME} (see the cards in mmalign's rewards/ folder for the fields)."
    )


def _is_sequence_classifier(config_path: Path) -> bool:
    try:
        architectures = json.loads(config_path.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError):
        return False
    return any(str(a).endswith("ForSequenceClassification") for a in architectures)


def _download_hub_repo(identifier: str) -> Path:
    repo_id, _, revision = identifier.partition("@")
    return download_repo(repo_id, revision or None)


def resolve_card(name: str) -> tuple[RewardCard, str | None]:
    """The card and the variant (or None) that ``name`` refers to."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(f"name: a reward name must be a non-empty string, got {name!r}.")
    name = name.strip()
    if name.startswith(LOCAL_DIR):
        return card_from_directory(name[len(LOCAL_DIR) :]), None
    if name.startswith(HF_HUB):
        return card_from_directory(_download_hub_repo(name[len(HF_HUB) :])), None
    cards = _shipped_cards()
    if name in cards:
        return cards[name], None
    family, _, variant = name.partition(":")
    if variant and family in cards and cards[family].default_variant:
        return cards[family], variant
    suggestions = difflib.get_close_matches(name, list(cards), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(map(repr, suggestions))}?" if suggestions else ""
    raise UnknownRewardError(
        f"name: unknown reward {name!r}.{hint} `mmalign rewards` lists them all; "
        "prefixes local-dir: and hf-hub: load a reward from a folder or the Hub."
    )


def reward_class(family: str) -> type[Reward]:
    if family not in FAMILIES:
        raise InvalidInputError(f"card family {family!r} is unknown; known families are {sorted(FAMILIES)}.")
    module, _, attribute = FAMILIES[family].partition(":")
    return getattr(importlib.import_module(module), attribute)


def load_reward(name: str, **kwargs) -> Reward:
    """Build the reward ``name`` refers to; ``kwargs`` go to its loader (``device=``, ``weights=``).
    ``remote:HOST:PORT`` is a reward served by ``mmalign serve-reward`` (``timeout=``, ``batch_size=``)."""
    if isinstance(name, str) and name.strip().startswith(REMOTE):
        from .remote import RemoteReward

        kwargs.pop("device", None)  # the server's device is its own
        return RemoteReward(name.strip()[len(REMOTE):], **kwargs)
    card, variant = resolve_card(name)
    try:
        reward = reward_class(card.family).from_card(card, variant, **kwargs)
    except TypeError as error:  # an argument the card or the caller gave that the loader does not take
        raise InvalidInputError(f"reward {name!r}: bad loader arguments (card args {card.args}, given {sorted(kwargs)}): {error}") from error
    reward.card = card
    return reward


def parse_weighted_name(text: str) -> tuple[str, float]:
    """``"clip=0.5"`` to ("clip", 0.5); a name without ``=WEIGHT`` weighs 1 (the CLI's and the demo's
    ``NAME[=WEIGHT]``)."""
    name, separator, weight = text.rpartition("=")
    if separator:
        try:
            return name, float(weight)
        except ValueError:
            pass
    return text, 1.0
