"""VideoReward on a tiny Qwen2-VL: a release folder laid out as KwaiVGI/VideoReward's (model_config.json,
checkpoint-N/model.pth as a PEFT-wrapped state dict of transformers 4.45's layout, the tokenizer with
the three reward tokens) loads with its LoRA merged; heads are read at the special tokens and
z-scored with the card's constants; frames are sampled and sized as qwen_vl_utils does; bad videos,
prompts and checkpoints are refused with the reason."""

import warnings

import pytest
import torch

from mmalign.errors import CheckpointMismatchError, InvalidInputError
from mmalign.rewards import load_reward
from mmalign.rewards.videoreward import REWARD_TOKENS, frame_indices, frame_size
from reward_toys import CARD, TINY, write_videoreward_release


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """``(base folder, release folder, original model, head)``."""
    return write_videoreward_release(tmp_path_factory.mktemp("videoreward"))


@pytest.fixture(scope="module")
def reward(release):
    base, folder, _, _ = release
    return load_reward("videoreward", checkpoint=folder, base=base, min_frame_pixels=56 * 56, video_fps=8)


def videos(count=2, frames=16, seed=0):
    return torch.rand(count, frames, 3, 56, 56, generator=torch.Generator().manual_seed(seed))


def test_the_release_loads_with_its_lora_merged(reward, release):
    _, _, original, head = release
    merged = reward.model.state_dict()
    for name, tensor in original.state_dict().items():
        if not name.startswith("lm_head."):
            torch.testing.assert_close(merged[name], tensor, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reward.rm_head.weight, head.weight)


def test_heads_are_read_at_the_reward_tokens_and_z_scored_with_the_cards_constants(reward, release):
    _, _, original, head = release
    prompts = ["a red ball rolls left", "two squares spin"]
    output = reward(videos(), prompts)
    assert set(output.heads) == {"VQ", "MQ", "TA"} and reward.normalization == CARD
    clips = [reward.frames(video) for video in videos()]
    texts = [reward.processor.apply_chat_template([{"role": "user", "content": [
        {"type": "video"}, {"type": "text", "text": reward.template.format(text_prompt=p)}]}], tokenize=False,
        add_generation_prompt=True) for p in prompts]
    batch = reward.processor(text=texts, videos=clips, return_tensors="pt", padding=True,
                             videos_kwargs={"do_rescale": False, "do_sample_frames": False})
    length = batch.input_ids.shape[1]
    with torch.no_grad():
        hidden = original.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                pixel_values_videos=batch.pixel_values_videos, video_grid_thw=batch.video_grid_thw,
                                position_ids=torch.arange(length).view(1, 1, length).expand(3, 2, length)).last_hidden_state
        raw = head(hidden).squeeze(-1)
    for name, token in zip(("VQ", "MQ", "TA"), REWARD_TOKENS):
        at = raw[batch.input_ids == reward.processor.tokenizer.convert_tokens_to_ids(token)]
        mean, std = CARD[name]
        torch.testing.assert_close(output.heads[name], (at - mean) / std, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.reward, output.heads["VQ"] + output.heads["MQ"] + output.heads["TA"])


def test_batches_do_not_change_scores(reward):
    prompts = ["a red ball rolls left", "a much longer prompt about two squares that spin and then stop"]
    batched = reward(videos(2, 16, 3), prompts).reward
    single = torch.cat([reward(videos(2, 16, 3)[i : i + 1], prompts[i]).reward for i in range(2)])
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("frames, video_fps, fps, expected", [
    (16, 8.0, 2.0, [0, 5, 10, 15]),        # 2 s at 8 fps: 4 frames at 2 fps
    (48, 24.0, 2.0, [0, 16, 31, 47]),      # 2 s at 24 fps
    (5, 2.0, 2.0, [0, 1, 3, 4]),           # an even count, at least 4
    (40, 2.0, 2.0, list(range(40))),       # already at 2 fps: every frame
])
def test_frames_are_sampled_as_qwen_vl_utils_samples_them(frames, video_fps, fps, expected):
    assert frame_indices(frames, video_fps, fps).tolist() == expected


def test_long_videos_are_capped_at_768_frames():
    assert len(frame_indices(2000, 2.0, 2.0)) == 768


def test_frames_are_sized_as_qwen_vl_utils_sizes_them():
    assert frame_size(480, 832, 448 * 448) == (336, 588)  # VideoAlign's 480×832 example
    assert frame_size(448, 448, 448 * 448) == (448, 448)
    height, width = frame_size(100, 100, 448 * 448)  # too small: scaled up to the minimum area
    assert height % 28 == 0 and width % 28 == 0 and height * width >= 128 * 28 * 28


def test_a_video_too_short_is_refused(reward):
    with pytest.raises(InvalidInputError, match="a video of 3 frame\\(s\\); VideoReward needs at least 4"):
        reward(torch.rand(1, 3, 3, 56, 56), "a ball")


def test_a_prompt_holding_a_reward_token_is_refused(reward):
    with pytest.raises(InvalidInputError, match="exactly one <\\|VQ_reward\\|>"):
        reward(videos(1), "a ball <|VQ_reward|>")


def test_another_sampling_fps_than_the_cards_warns(release):
    base, folder, _, _ = release
    with pytest.warns(UserWarning, match="sampling at 8 fps .*issue #21"):
        load_reward("videoreward", checkpoint=folder, base=base, fps=8.0, video_fps=16, **TINY)
    with pytest.warns(UserWarning, match="video_fps: not given"):
        load_reward("videoreward", checkpoint=folder, base=base, **TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_reward("videoreward", checkpoint=folder, base=base, video_fps=16, **TINY)


def test_a_release_that_does_not_fit_names_its_keys(release, tmp_path):
    base, folder, _, _ = release
    import shutil

    copy = tmp_path / "release"
    shutil.copytree(folder, copy)
    state = torch.load(copy / "checkpoint-7" / "model.pth", weights_only=True)
    state.pop("base_model.model.model.norm.weight")
    torch.save(state, copy / "checkpoint-7" / "model.pth")
    with pytest.raises(CheckpointMismatchError, match="model.language_model.norm.weight"):
        load_reward("videoreward", checkpoint=str(copy), base=base, video_fps=8, **TINY)
