"""The shapes video world's proxy reward: VideoReward's head names, VQ as its frame reward on each
frame (shapes-object, or the variant's),
TA that tells the captioned direction from its reverse, MQ that tells a smooth clip from a shuffled
one, gradients to the pixels, and NaN with a mask for captions outside the grammar."""

import numpy as np
import pytest
import torch

from mmalign.errors import InvalidInputError
from mmalign.rewards import load_reward
from mmalign.rewards.shapes_video import soft_centroids
from mmalign.rewards.videoreward import HEADS
from mmalign.shapes import clip_for, parse_motion_prompt, render_clip, sample_clip
from mmalign.shapes.scenes import RGB


@pytest.fixture(scope="module")
def reward():
    return load_reward("shapes-video-reward")


@pytest.fixture(scope="module")
def clips():
    pairs = [sample_clip(index, "heldout") for index in range(24)]
    videos = torch.stack([torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255 for clip, _ in pairs])
    return videos, [caption for _, caption in pairs]


@pytest.mark.parametrize("variant, frame_reward", [("", "shapes-object"), (":shapes-clip", "shapes-clip")])
def test_heads_are_videorewards_and_vq_is_the_frame_reward_per_frame(reward, clips, variant, frame_reward):
    videos, captions = clips
    proxy = load_reward(f"shapes-video-reward{variant}")
    assert proxy.name == f"shapes-video-reward{variant}"
    output = proxy(videos, captions)
    assert tuple(output.heads) == HEADS
    torch.testing.assert_close(output.reward, output.heads["VQ"] + output.heads["MQ"] + output.heads["TA"])
    frame_reward = load_reward(frame_reward)
    objects = [caption.split(" moving ")[0] for caption in captions]
    expected = torch.stack([frame_reward(video, obj).reward.mean() for video, obj in zip(videos, objects)])
    torch.testing.assert_close(output.heads["VQ"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.heads["MQ"], reward(videos, captions).heads["MQ"])


def test_ta_tells_the_direction_and_mq_the_smoothness(reward, clips):
    videos, captions = clips
    true, reversed_ = reward(videos, captions), reward(videos.flip(1), captions)
    assert (true.heads["TA"] > 0.3).all() and (reversed_.heads["TA"] < -0.3).all()
    torch.testing.assert_close(true.heads["MQ"], reversed_.heads["MQ"], atol=1e-5, rtol=1e-5)
    shuffled = reward(videos[:, torch.randperm(videos.shape[1], generator=torch.Generator().manual_seed(0))], captions)
    assert (true.heads["MQ"] > shuffled.heads["MQ"]).all()
    still = reward(videos[:, :1].expand(-1, videos.shape[1], -1, -1, -1).contiguous(), captions)  # a frozen frame
    assert (still.heads["MQ"].abs() < 0.05).all() and (still.heads["TA"].abs() < 0.05).all()


def test_the_soft_centroid_finds_the_rendered_object():
    prompt = parse_motion_prompt("a blue square moving down")
    clip = clip_for(prompt, np.random.default_rng(0))
    video = torch.from_numpy(render_clip(clip)).permute(0, 3, 1, 2).float()[None] / 255
    found = soft_centroids(video, torch.tensor(RGB["blue"]) / 255)[0]
    truth = torch.tensor([[scene.objects[0].x, scene.objects[0].y] for scene in clip.scenes])
    assert (found - truth).abs().max() < 0.05


def test_gradients_reach_the_pixels(reward, clips):
    videos = clips[0][:2].clone().requires_grad_(True)
    reward(videos, clips[1][:2]).reward.sum().backward()
    assert videos.grad.abs().sum() > 0


def test_bad_captions_and_inputs(reward, clips):
    videos, captions = clips
    output = reward(videos[:2], [captions[0], "a dog running"])
    assert output.mask.tolist() == [True, False] and torch.isnan(output.reward[1])
    with pytest.raises(InvalidInputError, match="at least 3"):
        reward(videos[:1, :2], captions[0])
    with pytest.raises(InvalidInputError):
        reward(videos[:, 0], captions)  # images, not videos
