import numpy as np
import pytest
import torch

from mmalign.shapes import ShapesEval, detect, sample
from mmalign.shapes.agreement import oracle_agreement
from mmalign.shapes.oracle import in_relation
from mmalign.shapes.scenes import Background, Scene, ShapeObject, render


def scene(*objects):
    return Scene(tuple(ShapeObject(*o) for o in objects), Background("plain", (20, 20, 24), 0))


def test_detects_colour_shape_and_place_of_each_object():
    image = render(scene(("circle", "red", 0.25, 0.3, 0.14), ("triangle", "blue", 0.75, 0.7, 0.15)), 32)
    found = sorted(detect(image), key=lambda d: d.colour)
    assert [(d.colour, d.shape) for d in found] == [("blue", "triangle"), ("red", "circle")]
    # centroids: the circle's is its centre; the triangle's lies a third of its half-extent below
    assert (found[1].x, found[1].y) == (pytest.approx(0.25, abs=0.02), pytest.approx(0.3, abs=0.02))
    assert (found[0].x, found[0].y) == (pytest.approx(0.75, abs=0.02), pytest.approx(0.75, abs=0.02))


def test_judges_each_category_against_hand_built_scenes():
    oracle = ShapesEval()
    image = render(scene(("square", "red", 0.25, 0.5, 0.13), ("circle", "blue", 0.75, 0.5, 0.13)), 32)
    expectations = {
        "a square": True, "a triangle": False, "a red square": True, "a blue square": False,
        "one red square": True, "two red squares": False, "a square and a circle": True,
        "a red square left of a blue circle": True, "a red square right of a blue circle": False,
        "a blue circle right of a red square": True, "a red square and a blue circle": True,
        "a blue square and a red circle": False,
    }
    for caption, expected in expectations.items():
        assert oracle.judge(image, caption).passed is expected, caption


def test_relation_needs_the_right_direction_along_a_dominant_axis():
    a, b = ShapeObject("circle", "red", 0.2, 0.5, 0.1), ShapeObject("square", "blue", 0.8, 0.6, 0.1)
    assert in_relation(a, b, "left of") and in_relation(b, a, "right of")
    assert not in_relation(a, b, "above")  # mostly sideways: not "above" although a is higher


def test_prompts_outside_the_grammar_are_not_scored_wrong():
    image, _, _ = sample(0)
    verdict = ShapesEval().judge(image, "a purple dragon")
    assert verdict.passed is None and "purple" in verdict.reason
    report = ShapesEval().evaluate([image, image], ["a purple dragon", "a circle"])
    assert len(report.unjudged) == 1 and report.counts == {"single_object": 1}


def test_reads_uint8_and_float_tensors_alike_and_refuses_odd_layouts():
    image, prompt, _ = sample(2, split="heldout")
    as_uint8 = torch.from_numpy(image.copy()).permute(2, 0, 1)
    oracle = ShapesEval()
    assert oracle.judge(as_uint8, prompt.text).passed is True
    assert oracle.judge(as_uint8.float() / 255, prompt.text).passed is True
    with pytest.raises(Exception, match=r"expected tensors \[3,H,W\]"):
        oracle.judge(as_uint8.permute(1, 2, 0), prompt.text)
    with pytest.raises(Exception, match="float arrays must lie in"):
        oracle.judge(image.astype(np.float32), prompt.text)


def test_accepts_tensors_and_reports_per_category():
    images, prompts = [], []
    for index in range(12):
        image, prompt, _ = sample(index, split="heldout")
        images.append(torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255)
        prompts.append(prompt.text)
    report = ShapesEval().evaluate(images, prompts)
    assert report.overall == 1.0 and sum(report.counts.values()) == 12
    assert "overall" in report.table()
    wrong = ShapesEval().evaluate(images, [prompts[-1]] + prompts[:-1])  # captions shifted by one
    assert wrong.overall < 0.5


@pytest.mark.parametrize("image_size", [32, 64])
def test_agrees_with_ground_truth_on_degraded_held_out_renders(image_size):
    result = oracle_agreement(renders=160, image_size=image_size, seed=5)
    assert result["judgements"] >= 300
    assert result["overall"] >= 0.99, result
