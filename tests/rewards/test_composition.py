"""Wrapper maths against values worked out by hand (see each test's comment)."""

import pytest
import torch

from mmalign.errors import InvalidInputError, NotDifferentiableError
from mmalign.rewards import Ensemble, PreferenceStrength, WeightedSum, as_loss, load_reward
from toys import MeanPixelReward, constant_images

# Images of mean 0.2 and 0.6. Members (scale·m + shift):
#   r1 = 2m      -> 0.4, 1.2   card stats (0.8, 0.4) -> z1 = -1, 1
#   r2 = -m + 1  -> 0.8, 0.4   card stats (0.6, 0.2) -> z2 = 1, -1
#   r3 = 3m - 1  -> -0.4, 0.8  card stats (0, 1)     -> z3 = -0.4, 0.8
IMAGES = constant_images(0.2, 0.6)


def members():
    return [
        MeanPixelReward(2, 0, mean=0.8, std=0.4, name="r1"),
        MeanPixelReward(-1, 1, mean=0.6, std=0.2, name="r2"),
        MeanPixelReward(3, -1, mean=0.0, std=1.0, name="r3"),
    ]


def test_weighted_sum():
    r1, r2, _ = members()
    output = WeightedSum([r1, r2], [0.5, 2.0])(IMAGES)
    # 0.5·0.4 + 2·0.8 = 1.8 ; 0.5·1.2 + 2·0.4 = 1.4
    torch.testing.assert_close(output.reward, torch.tensor([1.8, 1.4]))
    torch.testing.assert_close(output.heads["r1"], torch.tensor([0.4, 1.2]))
    with pytest.raises(InvalidInputError, match="weights: got 1 weights for 2 rewards"):
        WeightedSum([r1, r2], [1.0])


# Image 1: z = (-1, 1, -0.4): mean -0.133333, population var ((-0.866667)² + 1.133333² + (-0.266667)²)/3
# = (0.751111 + 1.284444 + 0.071111)/3 = 0.702222, std 0.837987, min -1.
# Image 2: z = (1, -1, 0.8): mean 0.266667, var (0.733333² + 1.266667² + 0.533333²)/3
# = (0.537778 + 1.604444 + 0.284444)/3 = 0.808889, std 0.899383, min -1.
@pytest.mark.parametrize(
    "aggregate, expected",
    [
        ("mean", [-0.133333, 0.266667]),
        ("min", [-1.0, -1.0]),
        ("mean_minus_std", [-0.133333 - 0.5 * 0.837987, 0.266667 - 0.5 * 0.899383]),
        ("mean_minus_var", [-0.133333 - 0.5 * 0.702222, 0.266667 - 0.5 * 0.808889]),
    ],
)
def test_ensemble_aggregates(aggregate, expected):
    output = Ensemble(members(), aggregate=aggregate, coefficient=0.5)(IMAGES)
    torch.testing.assert_close(output.reward, torch.tensor(expected), atol=1e-5, rtol=0)
    torch.testing.assert_close(output.uncertainty, torch.tensor([0.837987, 0.899383]), atol=1e-5, rtol=0)
    torch.testing.assert_close(output.heads["r3"], torch.tensor([-0.4, 0.8]))


def test_ensemble_needs_card_statistics_unless_told_not_to():
    bare = MeanPixelReward(name="bare")
    with pytest.raises(InvalidInputError, match=r"rewards\[1\] \('bare'\) has no normalisation statistics"):
        Ensemble([members()[0], bare])
    raw = Ensemble([members()[0], bare], normalize=False)(IMAGES)
    torch.testing.assert_close(raw.reward, torch.tensor([(0.4 + 0.2) / 2, (1.2 + 0.6) / 2]))


def test_preference_strength():
    # chosen m=0.6, rejected m=0.2: d = (0.8, -0.4, 1.2); mean 0.533333;
    # var ((0.266667)² + (-0.933333)² + 0.666667²)/3 = (0.071111 + 0.871111 + 0.444444)/3 = 0.462222, std 0.679869
    strength = PreferenceStrength(members())
    output = strength(constant_images(0.6), constant_images(0.2))
    torch.testing.assert_close(output.reward, torch.tensor([0.533333]), atol=1e-5, rtol=0)
    torch.testing.assert_close(output.uncertainty, torch.tensor([0.679869]), atol=1e-5, rtol=0)
    torch.testing.assert_close(output.heads["r2"], torch.tensor([-0.4]))
    with pytest.raises(InvalidInputError, match="rejected: got 2 samples for 1 chosen"):
        strength(constant_images(0.6), constant_images(0.2, 0.3))


def test_as_loss_linear_and_hinge():
    r1 = MeanPixelReward(2, 0, output_range=(0.0, 2.0))
    # offset defaults to the top of the output range: 2 - (0.4, 1.2)
    torch.testing.assert_close(as_loss(r1)(IMAGES), torch.tensor([1.6, 0.8]))
    torch.testing.assert_close(as_loss(r1, offset=1.0, weight=2.0)(IMAGES), torch.tensor([1.2, -0.4]))
    torch.testing.assert_close(as_loss(r1, offset=1.0, kind="hinge")(IMAGES), torch.tensor([0.6, 0.0]))
    with pytest.raises(NotDifferentiableError, match="cannot be a loss"):
        as_loss(load_reward("jpeg-compressibility"), offset=0.0)
    with pytest.raises(InvalidInputError, match="offset"):
        as_loss(MeanPixelReward())


def test_loss_gradient_reaches_the_pixels():
    images = constant_images(0.2, 0.6).requires_grad_(True)
    loss = as_loss(MeanPixelReward(2, 0), offset=1.0)(images).sum()
    loss.backward()
    # d/dx of (1 - 2·mean(x)) is -2/numel per pixel
    torch.testing.assert_close(images.grad, torch.full_like(images, -2 / (3 * 8 * 8)))


def test_nan_items_propagate_through_combinations():
    nan_member = MeanPixelReward(1, 0, mean=0.0, std=1.0, nan_below=0.4, name="picky")
    for combined in (WeightedSum([members()[0], nan_member]), Ensemble([members()[0], nan_member])):
        output = combined(IMAGES)
        assert output.mask.tolist() == [False, True]
        assert torch.isnan(output.reward[0]) and torch.isfinite(output.reward[1])


def test_a_single_reward_or_a_bad_weight_is_named():
    with pytest.raises(InvalidInputError, match="rewards: pass a non-empty list"):
        WeightedSum(members()[0])
    with pytest.raises(InvalidInputError, match="rewards: pass a non-empty list"):
        Ensemble(members()[0])
    with pytest.raises(InvalidInputError, match="weights: must be finite"):
        WeightedSum(members()[:2], [1.0, float("nan")])


def test_members_must_share_a_modality():
    text = MeanPixelReward(modality="text")
    with pytest.raises(InvalidInputError, match="share one modality"):
        WeightedSum([MeanPixelReward(), text])
    with pytest.raises(InvalidInputError, match="non-empty list of Reward"):
        WeightedSum([])
