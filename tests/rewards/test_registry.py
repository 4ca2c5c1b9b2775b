import json

import pytest
import torch

from mmalign.errors import InvalidInputError, UnknownRewardError
from mmalign.rewards import Reward, list_rewards, load_reward
from mmalign.rewards.card import RewardCard
from mmalign.rewards.clip import CLIPScore
from mmalign.rewards.registry import FAMILIES


def test_every_shipped_card_is_complete_and_named_after_its_file():
    cards = list_rewards()
    assert {"clip", "laion-aesthetic", "jpeg-compressibility", "jpeg-incompressibility"} <= {c.name for c in cards}
    for card in cards:
        assert card.family in FAMILIES
        assert card.license and card.references and card.failure_modes and card.source
        spec = card.spec()
        assert spec.modality in ("image", "video", "text")


def test_unknown_loader_arguments_are_named():
    with pytest.raises(InvalidInputError, match="bad loader arguments"):
        load_reward("jpeg-compressibility", colour="red")


def test_weight_free_rewards_load_frozen():
    for name in ("jpeg-compressibility", "jpeg-incompressibility"):
        reward = load_reward(name)
        assert isinstance(reward, Reward) and not reward.training and reward.card.name == name


def test_unknown_names_suggest_the_closest():
    with pytest.raises(UnknownRewardError, match="Did you mean 'jpeg-compressibility'"):
        load_reward("jpeg-compresibility")
    with pytest.raises(UnknownRewardError, match="mmalign rewards"):
        load_reward("zzzz")
    with pytest.raises(InvalidInputError, match="non-empty string"):
        load_reward("")


def test_local_dir_open_clip_folder_is_a_clip_score(tiny_clip_dir):
    reward = load_reward(f"local-dir:{tiny_clip_dir}")
    assert isinstance(reward, CLIPScore) and reward.spec.needs_prompt


def test_local_dir_without_a_card_says_what_is_missing(tmp_path):
    with pytest.raises(UnknownRewardError, match="reward_card.json"):
        load_reward(f"local-dir:{tmp_path}")
    with pytest.raises(UnknownRewardError, match="is not a folder"):
        load_reward(f"local-dir:{tmp_path / 'absent'}")


def test_hf_hub_prefix_downloads_then_loads_like_a_folder(tiny_clip_dir, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, revision=None, **kwargs):
        calls.append((repo_id, revision))
        return str(tiny_clip_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    reward = load_reward("hf-hub:someone/tiny-clip@v1")
    assert calls == [("someone/tiny-clip", "v1")]
    assert isinstance(reward, CLIPScore)


def test_a_card_cannot_name_code_outside_the_families(tmp_path):
    card = {"name": "evil", "family": "os:system", "description": "x", "modality": "image",
            "differentiable": False, "needs_prompt": False}
    (tmp_path / "reward_card.json").write_text(json.dumps(card))
    with pytest.raises(InvalidInputError, match="card family 'os:system' is unknown"):
        load_reward(f"local-dir:{tmp_path}")


def test_card_errors_name_the_file_and_field(tmp_path):
    (tmp_path / "reward_card.json").write_text(json.dumps({"name": "x", "family": "jpeg", "colour": 1}))
    with pytest.raises(InvalidInputError, match=r"unknown field\(s\) \['colour'\]"):
        load_reward(f"local-dir:{tmp_path}")
    (tmp_path / "reward_card.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="cannot be read as JSON"):
        load_reward(f"local-dir:{tmp_path}")
    (tmp_path / "reward_card.json").write_text(json.dumps({"name": "x", "family": "jpeg", "description": "",
        "modality": "image", "differentiable": False, "needs_prompt": False, "normalization": None, "args": []}))
    with pytest.raises(InvalidInputError, match="field 'args' must be a dict"):
        load_reward(f"local-dir:{tmp_path}")
    with pytest.raises(InvalidInputError, match="output_kind"):
        RewardCard.from_dict({"name": "x", "family": "jpeg", "description": "", "modality": "image",
                              "differentiable": False, "needs_prompt": False, "output_kind": "stars"}, origin="test")


def test_card_statistics_reach_the_spec(tmp_path):
    card = json.loads(json.dumps(next(c for c in list_rewards() if c.name == "jpeg-compressibility").to_dict()))
    card.update(name="jpeg-with-stats", family="jpeg", args={"sign": -1}, normalization={"mean": -2.0, "std": 0.5})
    (tmp_path / "reward_card.json").write_text(json.dumps(card))
    reward = load_reward(f"local-dir:{tmp_path}")
    assert (reward.spec.mean, reward.spec.std) == (-2.0, 0.5)
    assert reward(torch.rand(1, 3, 8, 8)).reward.shape == (1,)
