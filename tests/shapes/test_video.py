"""The shapes video world: captions and their held-out split, deterministic clips whose object moves
as captioned, and the video oracle, which agrees with ground truth on held-out renders and fails
clips that are reversed, shuffled, recoloured or missing the object."""

import dataclasses

import numpy as np
import pytest
import torch

from mmalign.shapes.grammar import HELD_OUT_PAIRS, UnjudgeablePromptError
from mmalign.shapes.scenes import Scene, render
from mmalign.shapes.video import (DIRECTIONS, NUM_FRAMES, all_motion_prompts, clip_for, motion_prompts_for, parse_motion_prompt,
                                  render_clip, sample_clip)
from mmalign.shapes.video_oracle import ShapesVideoEval


@pytest.fixture(scope="module")
def heldout_clips():
    return [sample_clip(index, "heldout") for index in range(300)]


def test_captions_parse_back_and_the_split_holds_out_unseen_combinations():
    prompts = all_motion_prompts()
    assert len(prompts) == 60 and all(parse_motion_prompt(p.text) == p for p in prompts)
    train, heldout = set(motion_prompts_for("train")), set(motion_prompts_for("heldout"))
    assert train | heldout == set(prompts) and not train & heldout
    assert {p for p in prompts if (p.colour, p.shape) in HELD_OUT_PAIRS} <= heldout
    assert parse_motion_prompt("A  Red circle moving LEFT.").text == "a red circle moving left"
    for bad in ("a red circle", "a red circle moving sideways", "two red circles moving left", "a purple square moving up"):
        with pytest.raises(UnjudgeablePromptError, match="video grammar"):
            parse_motion_prompt(bad)


def test_clips_repeat_and_their_object_moves_as_captioned():
    first, caption = sample_clip(7, "train")
    again, same = sample_clip(7, "train")
    assert caption == same and np.array_equal(first, again) and first.shape == (NUM_FRAMES, 32, 32, 3) and first.dtype == np.uint8
    rng = np.random.default_rng(0)
    for prompt in all_motion_prompts():
        clip = clip_for(prompt, rng)
        movers = [scene.objects[clip.mover] for scene in clip.scenes]
        dx, dy = movers[-1].x - movers[0].x, movers[-1].y - movers[0].y
        ux, uy = DIRECTIONS[prompt.direction]
        assert dx * ux + dy * uy >= 0.3 and abs(dx * uy - dy * ux) < 1e-9  # straight along the direction
        assert all(0 < m.x - m.size and m.x + m.size < 1 and 0 < m.y - m.size and m.y + m.size < 1 for m in movers)
        assert prompt.colour in (None, movers[0].colour) and (movers[0].colour, movers[0].shape) not in (
            HELD_OUT_PAIRS if prompt.colour is None else set())


def test_the_oracle_agrees_with_ground_truth_on_heldout_clips(heldout_clips):
    report = ShapesVideoEval().evaluate([clip for clip, _ in heldout_clips], [caption for _, caption in heldout_clips])
    assert report.count == 300 and report.accuracy["overall"] >= 0.99
    assert all(report.accuracy[head] >= 0.99 for head in ("object", "direction", "smoothness"))


def test_the_oracle_fails_reversed_shuffled_and_recoloured_clips(heldout_clips):
    oracle, clips = ShapesVideoEval(), heldout_clips[:100]
    reversed_ = oracle.evaluate([clip[::-1] for clip, _ in clips], [caption for _, caption in clips])
    assert reversed_.accuracy["direction"] <= 0.01 and reversed_.accuracy["object"] >= 0.99
    rng = np.random.default_rng(1)
    shuffled = oracle.evaluate([clip[rng.permutation(len(clip))] for clip, _ in clips], [c for _, c in clips])
    assert shuffled.accuracy["overall"] <= 0.05 and shuffled.accuracy["smoothness"] <= 0.1
    other = {"red": "green", "green": "blue", "blue": "red", "yellow": "red"}
    recoloured = []
    for index, prompt in enumerate(p for p in motion_prompts_for("heldout") if p.colour):
        clip = clip_for(prompt, np.random.default_rng(index))
        scenes = [Scene(tuple(dataclasses.replace(o, colour=other[o.colour]) if i == clip.mover else o
                              for i, o in enumerate(scene.objects)), scene.background) for scene in clip.scenes]
        recoloured.append(np.stack([render(scene) for scene in scenes]))
    captions = [p.text for p in motion_prompts_for("heldout") if p.colour]
    assert ShapesVideoEval().evaluate(recoloured, captions).accuracy["object"] <= 0.05


def test_a_flickering_object_fails_object_and_smoothness():
    prompt = parse_motion_prompt("a green square moving right")
    clip = clip_for(prompt, np.random.default_rng(3))
    frames = render_clip(clip)
    frames[4] = render(Scene((), clip.scenes[4].background))  # the object vanishes for one frame
    verdict = ShapesVideoEval().judge(frames, prompt.text)
    assert verdict.heads == {"object": False, "direction": True, "smoothness": False} and verdict.passed is False


def test_pipeline_style_float_videos_and_unknown_captions():
    frames, caption = sample_clip(0, "heldout")
    as_floats = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255  # [T,3,H,W] in [0,1]
    assert ShapesVideoEval().judge(as_floats, caption).passed is True
    verdict = ShapesVideoEval().judge(as_floats, "a dog running")
    assert verdict.passed is None and "video grammar" in verdict.reason
