"""shapes-object, the per-frame VQ reward of the shapes video world: its signed distances against
hand-worked values and against the scene renderer, what it scores high and low, and its errors."""

import numpy as np
import pytest
import torch

from mmalign.errors import InvalidInputError
from mmalign.rewards import load_reward
from mmalign.shapes import sample_clip
from mmalign.shapes.grammar import COLOURS
from mmalign.shapes.scenes import Background, Scene, ShapeObject, render
from mmalign.shapes.train_object import render_morphs, signed_distance


@pytest.fixture(scope="module")
def reward():
    return load_reward("shapes-object")


def frames_of(index: int, split: str = "heldout"):
    clip, caption = sample_clip(index, split)
    return torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255, caption


def test_signed_distances_match_hand_worked_values():
    point = lambda x, y: (np.array([x]), np.array([y]))
    assert signed_distance("circle", *point(0.5, 0.5), 0.5, 0.5, 0.2)[0] == pytest.approx(-0.2)
    assert signed_distance("circle", *point(0.8, 0.9), 0.5, 0.5, 0.2)[0] == pytest.approx(0.5 - 0.2)  # 3-4-5
    assert signed_distance("square", *point(0.5, 0.5), 0.5, 0.5, 0.2)[0] == pytest.approx(-0.2)
    assert signed_distance("square", *point(0.8, 0.9), 0.5, 0.5, 0.2)[0] == pytest.approx(np.hypot(0.1, 0.2))  # off a corner
    assert signed_distance("square", *point(0.6, 0.5), 0.5, 0.5, 0.2)[0] == pytest.approx(-0.1)
    # the upright triangle (0.5, 0.3), (0.7, 0.7), (0.3, 0.7): its base is 0.1 below (0.5, 0.8)
    assert signed_distance("triangle", *point(0.5, 0.8), 0.5, 0.5, 0.2)[0] == pytest.approx(0.1)
    assert signed_distance("triangle", *point(0.5, 0.2), 0.5, 0.5, 0.2)[0] == pytest.approx(0.1)  # above the apex
    assert signed_distance("triangle", *point(0.5, 0.6), 0.5, 0.5, 0.2)[0] == pytest.approx(-0.1)  # nearest the base
    # (0.6, 0.6) lies 0.02 / |(0.2, 0.4)| inside the right side, nearer than the base
    assert signed_distance("triangle", *point(0.6, 0.6), 0.5, 0.5, 0.2)[0] == pytest.approx(-0.1 / np.sqrt(5))


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
def test_unmorphed_shapes_render_as_the_scene_renderer_draws_them(shape):
    background = Background("plain", (30, 30, 30), 0)
    obj = ShapeObject(shape, "red", 0.45, 0.55, 0.15)
    ours = render_morphs([(shape, "circle", 0.0, "red", obj.x, obj.y, obj.size)], background)
    theirs = render(Scene((obj,), background)) / 255
    assert np.abs(ours - theirs).mean() < 0.01 and np.abs(ours - theirs).max() < 0.2  # edges only


def test_renders_score_high_for_their_object_and_low_for_another(reward):
    shapes = ("circle", "square", "triangle")
    own, wrong = [], []
    for index in range(20):  # held-out clips: blue triangles and yellow circles among them
        frames, caption = frames_of(index)
        obj = caption.split(" moving ")[0]
        colour, shape = (obj.split()[1:] if len(obj.split()) == 3 else [None, obj.split()[1]])
        other = shapes[(shapes.index(shape) + 1) % 3]
        own.append(reward(frames, [obj] * len(frames)).reward.mean())
        wrong.append(reward(frames, [f"a {colour + ' ' if colour else ''}{other}"] * len(frames)).reward.mean())
    own, wrong = torch.stack(own), torch.stack(wrong)
    assert own.mean() > 0.9 and wrong.mean() < 0.1, (own, wrong)


def test_a_half_morphed_shape_and_a_missing_colour_score_low(reward):
    background = Background("plain", (30, 30, 30), 0)
    clean = render_morphs([("square", "circle", 0.0, "green", 0.5, 0.5, 0.15)], background)
    halfway = render_morphs([("square", "circle", 0.5, "green", 0.5, 0.5, 0.15)], background)
    images = torch.tensor(np.stack([clean, halfway, clean]), dtype=torch.float32).permute(0, 3, 1, 2)
    scores = reward(images, ["a green square", "a green square", "a red square"]).reward
    assert scores[0] > 0.9 and scores[1] < 0.5 and scores[2] < 0.1, scores


def test_a_caption_without_a_colour_takes_its_best_colour(reward):
    frames, _ = frames_of(3, "train")
    per_colour = torch.stack([reward(frames, [f"a {c} circle"] * len(frames)).reward for c in COLOURS])
    torch.testing.assert_close(reward(frames, ["a circle"] * len(frames)).reward, per_colour.amax(0))


def test_motion_captions_read_as_their_object_and_others_are_unscored(reward):
    frames, caption = frames_of(0)
    torch.testing.assert_close(reward(frames[:2], [caption] * 2).reward,
                               reward(frames[:2], [caption.split(" moving ")[0]] * 2).reward)
    output = reward(frames[:2], ["two red circles", caption])
    assert output.mask.tolist() == [False, True] and torch.isnan(output.reward[0])


def test_gradients_reach_the_pixels(reward):
    frames, caption = frames_of(1)
    frames = frames[:2].clone().requires_grad_(True)
    reward(frames, [caption] * 2).reward.sum().backward()
    assert frames.grad is not None and frames.grad.abs().sum() > 0


def test_other_sizes_are_resized_to_the_renders_size(reward):
    frames, caption = frames_of(2)
    larger = torch.nn.functional.interpolate(frames, scale_factor=2, mode="nearest")
    torch.testing.assert_close(reward(larger, [caption] * 9).reward, reward(frames, [caption] * 9).reward, atol=0.05, rtol=0)


def test_bad_samples_get_the_reward_interfaces_errors(reward):
    with pytest.raises(InvalidInputError):
        reward(torch.rand(2, 9, 3, 32, 32), ["a red circle"] * 2)  # a video: score its frames
