"""Transform maths against values worked out by hand."""

import math

import pytest
import torch

from mmalign.errors import InvalidInputError
from mmalign.rewards import (
    Affine, Clamp, Ensemble, LogSigmoidCentered, PPOCCalibration, Reward, RewardOutput, RewardSpec,
    UncertaintyWeighted, ZScore,
)
from mmalign.rewards import as_loss
from toys import MeanPixelReward, constant_images

IMAGES = constant_images(0.2, 0.6)  # r1 = 2m -> 0.4, 1.2


def r1():
    return MeanPixelReward(2, 0, mean=0.8, std=0.4, name="r1")


def test_affine_moves_values_and_card_statistics():
    affine = Affine(r1(), scale=3.0, shift=-1.0)
    torch.testing.assert_close(affine(IMAGES).reward, torch.tensor([0.2, 2.6]))
    assert affine.spec.mean == pytest.approx(1.4) and affine.spec.std == pytest.approx(1.2)


def test_zscore_from_the_card_or_given():
    torch.testing.assert_close(ZScore(r1())(IMAGES).reward, torch.tensor([-1.0, 1.0]))
    torch.testing.assert_close(ZScore(MeanPixelReward(2, 0), mean=0.4, std=0.8)(IMAGES).reward, torch.tensor([0.0, 1.0]))
    with pytest.raises(InvalidInputError, match="no normalisation statistics"):
        ZScore(MeanPixelReward())


def test_clamp_bounds_values_and_passes_gradient_only_inside():
    images = constant_images(0.2, 0.35, 0.6).requires_grad_(True)  # r1 = 0.4, 0.7, 1.2
    output = Clamp(r1(), min=0.5, max=1.0)(images)
    torch.testing.assert_close(output.reward, torch.tensor([0.5, 0.7, 1.0]))
    output.reward.sum().backward()
    assert images.grad[0].abs().sum() == 0 and images.grad[2].abs().sum() == 0
    torch.testing.assert_close(images.grad[1], torch.full_like(images[1], 2 / (3 * 8 * 8)))
    # the range is the inner range intersected with the bounds, so a loss offset stays finite
    bounded = Clamp(MeanPixelReward(2, 0, output_range=(0.0, 2.0)), min=0.5)
    assert bounded.spec.output_range == (0.5, 2.0)
    with pytest.raises(InvalidInputError, match="offset: must be finite"):
        as_loss(Clamp(MeanPixelReward(), min=0.0))
    with pytest.raises(InvalidInputError):
        Clamp(r1())
    with pytest.raises(InvalidInputError, match="exceeds"):
        Clamp(r1(), min=2, max=1)


def test_log_sigmoid_centred():
    # log σ(0.4 − 0.4) = log ½ = −0.693147 ; log σ(1.2 − 0.4) = −log(1 + e^−0.8) = −log 1.449329 = −0.371101
    output = LogSigmoidCentered(r1(), reference=0.4)(IMAGES)
    torch.testing.assert_close(output.reward, torch.tensor([-0.693147, -0.371101]), atol=1e-5, rtol=0)
    per_prompt = LogSigmoidCentered(MeanPixelReward(2, 0, needs_prompt=True), reference={"a": 0.4, "b": 1.2})
    torch.testing.assert_close(per_prompt(IMAGES, ["a", "b"]).reward, torch.tensor([-0.693147, -0.693147]), atol=1e-5, rtol=0)
    with pytest.raises(InvalidInputError, match="no reference reward"):
        per_prompt(IMAGES, ["a", "c"])
    # a per-prompt reference makes the prompt required even for a prompt-blind reward
    with pytest.raises(InvalidInputError, match="pass `prompts=`"):
        LogSigmoidCentered(r1(), reference={"a": 0.4})(IMAGES)
    assert LogSigmoidCentered.reference_from_scores(torch.arange(101.0)) == pytest.approx(85.0)


class HalfLength(Reward):
    """r = len(text) / 2, on texts."""

    def __init__(self):
        super().__init__(RewardSpec(modality="text", differentiable=False, needs_prompt=False), "half-length")
        self.freeze()

    def forward(self, texts, prompts=None):
        return RewardOutput(reward=torch.tensor([len(t) / 2 for t in texts]))


TEXTS = ["abcd Confidence: 8", "ab Confidence: 2", "abcdef"]  # r = 2, 1, 3 ; c = 0.8, 0.2, 0.5


def test_ppo_c_threshold_mode_by_hand():
    calibrated = PPOCCalibration(HalfLength())
    output = calibrated(TEXTS)
    # average 0 -> 0.1·mean(2, 1, 3) = 0.2 ; f = 0.5·|r|·(c − 0.5) = 0.3, −0.15, 0 ; all r ≥ 0.2 -> r + f
    torch.testing.assert_close(output.reward, torch.tensor([2.3, 0.85, 3.0]))
    torch.testing.assert_close(output.heads["confidence"], torch.tensor([0.8, 0.2, 0.5]))
    assert calibrated.reward_average.item() == pytest.approx(0.2)
    calibrated(TEXTS)
    assert calibrated.reward_average.item() == pytest.approx(0.1 * 2 + 0.9 * 0.2)
    # the moving average is state: it survives a state_dict round trip
    fresh = PPOCCalibration(HalfLength())
    fresh.load_state_dict(calibrated.state_dict())
    assert fresh.reward_average.item() == pytest.approx(0.38)


def test_ppo_c_threshold_subtracts_below_the_average():
    calibrated = PPOCCalibration(HalfLength())
    calibrated.reward_average.fill_(10.0)
    # average → 0.1·1 + 0.9·10 = 9.1 ; r = 1 < 9.1 and c = 0.9: f = 0.5·1·0.4 = 0.2 -> r − f = 0.8
    torch.testing.assert_close(calibrated(["ab Confidence: 9"]).reward, torch.tensor([0.8]))


def test_ppo_c_difference_mode_by_hand():
    output = PPOCCalibration(HalfLength(), w=2.0, mode="difference")(TEXTS)
    # average 0.2 ; r + 2·(r − 0.2)·(c − 0.5) = 2 + 2·1.8·0.3, 1 + 2·0.8·(−0.3), 3
    torch.testing.assert_close(output.reward, torch.tensor([3.08, 0.52, 3.0]))


def test_ppo_c_reads_confidence_like_the_official_code():
    confidence, stripped = __import__("mmalign.rewards.transforms", fromlist=["x"]).verbalized_confidence(
        ["Answer 4. confidence: 7/10.", "no confidence given", [{"role": "assistant", "content": "x Confidence: 12"}]]
    )
    torch.testing.assert_close(confidence, torch.tensor([0.7, 0.5, 1.0]))  # case-insensitive, clamped to 10
    assert stripped[0] == "Answer 4." and stripped[2][-1]["content"] == "x"


def test_ppo_c_average_can_be_frozen_for_evaluation():
    calibrated = PPOCCalibration(HalfLength())
    calibrated.update = False
    calibrated(TEXTS)
    assert calibrated.reward_average.item() == 0.0


def test_ppo_c_checks_the_confidence_function():
    calibrated = PPOCCalibration(MeanPixelReward(), confidence=lambda images: torch.full((len(images), 1), 0.5))
    with pytest.raises(InvalidInputError, match=r"confidence: must give a Tensor\[2\]"):
        calibrated(IMAGES)
    ranged = PPOCCalibration(MeanPixelReward(), confidence=lambda images: torch.full((len(images),), 2.0))
    with pytest.raises(InvalidInputError, match="confidence"):
        ranged(IMAGES)


def test_transforms_refuse_what_is_not_a_reward():
    for transform in (Affine, ZScore, LogSigmoidCentered, PPOCCalibration, UncertaintyWeighted):
        with pytest.raises(InvalidInputError, match="reward: expected a Reward"):
            transform("clip")
    with pytest.raises(InvalidInputError, match="reward: expected a Reward"):
        Clamp("clip", min=0.0)


def test_ppo_c_arguments_are_checked():
    with pytest.raises(InvalidInputError, match="mode"):
        PPOCCalibration(HalfLength(), mode="other")
    with pytest.raises(InvalidInputError, match="alpha"):
        PPOCCalibration(HalfLength(), alpha=0)
    with pytest.raises(InvalidInputError, match="confidence"):
        PPOCCalibration(MeanPixelReward())


def test_uncertainty_weighting():
    ensemble = Ensemble([
        MeanPixelReward(2, 0, mean=0.8, std=0.4, name="a"),
        MeanPixelReward(-1, 1, mean=0.6, std=0.2, name="b"),
        MeanPixelReward(3, -1, mean=0.0, std=1.0, name="c"),
    ])
    # image 1 of test_composition: mean −0.133333, U = 0.837987
    output = UncertaintyWeighted(ensemble, penalty=0.1)(constant_images(0.2))
    expected = math.exp(-0.837987) * -0.133333 - 0.1 * 0.837987
    torch.testing.assert_close(output.reward, torch.tensor([expected]), atol=1e-5, rtol=0)
    with pytest.raises(InvalidInputError, match="reports no uncertainty"):
        UncertaintyWeighted(r1())(IMAGES)


def test_transforms_keep_the_mask():
    picky = MeanPixelReward(1, 0, mean=0.0, std=1.0, nan_below=0.4)
    ensemble = Ensemble([picky, MeanPixelReward(2, 0, mean=0.8, std=0.4)])
    transforms = (Affine(picky, 2), ZScore(picky), Clamp(picky, max=1), LogSigmoidCentered(picky),
                  UncertaintyWeighted(ensemble), PPOCCalibration(picky, confidence=lambda x: torch.full((len(x),), 0.7)))
    for transformed in transforms:
        output = transformed(IMAGES)
        assert output.mask.tolist() == [False, True] and torch.isnan(output.reward[0])
