"""ImageReward on a tiny BLIP of transformers' classes: a state dict with the official key names
(blip.visual_encoder.blocks.{i}.attn.qkv, blip.text_encoder..., mlp.layers.{0,2,4,6,7}) loads by
mapping and reproduces the model it came from; the card's constants z-score the head; gradients
reach the pixels; batches do not change scores; a file that does not fit names its keys."""

import pytest
import torch

from mmalign.errors import CheckpointMismatchError
from mmalign.rewards import load_reward
from mmalign.rewards.imagereward import HEAD_MEAN, HEAD_STD
from reward_checks import check_gradients_and_batch_invariance
from reward_toys import VISION, official_layout, write_imagereward

PROMPTS = ["a red circle", "two blue squares", "a green triangle above a red circle"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``(load_reward arguments, original model)``."""
    return write_imagereward(tmp_path_factory.mktemp("imagereward"))


@pytest.fixture(scope="module")
def reward(tiny):
    return load_reward("imagereward", **tiny[0])


def test_the_official_layout_has_blips_key_names(tiny):
    official = torch.load(tiny[0]["checkpoint"], weights_only=True)
    vision = [k for k in official if k.startswith("blip.visual_encoder.")]
    assert len(vision) == 4 + 12 * VISION["num_hidden_layers"] + 2  # cls, pos, patch w/b; 12 per block; norm
    for key in ("blip.visual_encoder.cls_token", "blip.visual_encoder.blocks.1.attn.qkv.weight",
                "blip.visual_encoder.blocks.0.mlp.fc2.bias", "blip.visual_encoder.norm.weight",
                "blip.text_encoder.encoder.layer.1.crossattention.self.key.weight",
                "blip.text_encoder.embeddings.word_embeddings.weight", "mlp.layers.0.weight", "mlp.layers.7.bias"):
        assert key in official
    assert not any(k.startswith("mlp.layers.1.") for k in official)  # dropouts hold no weights


def test_mapped_weights_reproduce_the_model_they_came_from(reward, tiny):
    _, original = tiny
    for name, tensor in original.state_dict().items():
        torch.testing.assert_close(reward.model.state_dict()[name], tensor, rtol=0, atol=0)


def test_the_reward_is_the_cls_head_z_scored_with_the_official_constants(reward, tiny):
    _, original = tiny
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    output = reward(images, PROMPTS)
    tokens = reward.tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    with torch.no_grad():
        vision = original.vision_model(pixel_values=(images - mean.view(3, 1, 1)) / std.view(3, 1, 1)).last_hidden_state
        text = original.text_encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask,
                                     encoder_hidden_states=vision, is_decoder=False).last_hidden_state[:, 0]
        raw = original.mlp(text).squeeze(-1)
    torch.testing.assert_close(output.heads["raw"], raw, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.reward, (raw - 0.16717362830052426) / 1.0333394966054072, atol=1e-5, rtol=1e-5)
    assert (reward.head_mean, reward.head_std) == (HEAD_MEAN, HEAD_STD)  # from the card's args
    assert tokens.input_ids.shape[1] == 35


def test_the_score_reads_the_image_through_cross_attention(reward):
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    scores = reward(images, [PROMPTS[0]] * 2).reward
    assert (scores[0] - scores[1]).abs() > 1e-4
    other_prompt = reward(images[:1], PROMPTS[1]).reward
    assert (other_prompt - scores[0]).abs() > 1e-4


def test_gradients_reach_the_pixels_and_batches_do_not_change_scores(reward):
    images = torch.rand(8, 3, 40, 32, generator=torch.Generator().manual_seed(3))
    check_gradients_and_batch_invariance(reward, images, [PROMPTS[i % 3] for i in range(8)], rtol=1e-5)  # scores near 60


def test_a_checkpoint_that_does_not_fit_names_its_keys(tiny, tmp_path):
    arguments, model = tiny
    official = official_layout(model)
    del official["blip.visual_encoder.norm.weight"]
    official["blip.itm_head.weight"] = torch.zeros(2, 32)
    torch.save(official, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError) as raised:
        load_reward("imagereward", **{**arguments, "checkpoint": str(tmp_path / "bad.pt")})
    assert "vision_model.post_layernorm.weight" in str(raised.value) and "blip.itm_head.weight" in str(raised.value)
