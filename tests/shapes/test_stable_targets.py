"""Stable Target Field targets against hand-computed posterior means, and the recipe's reference sets."""

import math

import numpy as np
import pytest
import torch

from mmalign.shapes.stable_targets import stable_targets
from mmalign.shapes.train_video import draw_references


def test_two_references_give_the_hand_computed_posterior_mean():
    # x_t = 1, t = 0.5, references 0 and 2: squared distances to (1 - t)·x_r are 1 and 0, so the
    # weights are e^(-1/(2·0.25)) = e^-2 and e^0, and the mean is 2 / (1 + e^-2) = 1.761594
    noisy, t = torch.tensor([[1.0]]), torch.tensor([0.5])
    references = torch.tensor([[[0.0], [2.0]]])
    torch.testing.assert_close(stable_targets(noisy, t, references), torch.tensor([[2 / (1 + math.exp(-2))]]))
    assert 2 / (1 + math.exp(-2)) == pytest.approx(1.761594, abs=1e-6)


def test_low_noise_keeps_the_own_latent_and_high_noise_averages_the_references():
    generator = torch.Generator().manual_seed(0)
    references = torch.randn(3, 16, 4, 2, 5, 5, generator=generator)
    own = references[:, 0]
    for t, expected in ((0.01, own), (0.99999, references.mean(1))):
        level = torch.full((3,), t)
        noisy = (1 - t) * own + t * torch.randn(own.shape, generator=generator)
        torch.testing.assert_close(stable_targets(noisy, level, references), expected, atol=1e-3, rtol=0)


def test_references_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"references: shape \(2, 3, 4\) should be \[batch, R, \*\(5,\)\]"):
        stable_targets(torch.zeros(2, 5), torch.ones(2) / 2, torch.zeros(2, 3, 4))


def test_reference_sets_start_with_the_sample_and_share_its_caption():
    captions = ["a"] * 6 + ["b"] * 3 + ["c"]
    groups = {c: np.flatnonzero(np.array(captions) == c) for c in set(captions)}
    rng = np.random.default_rng(0)
    index, dropped = np.array([0, 7, 9, 2]), np.array([False, False, False, True])
    references = draw_references(rng, index, dropped, groups, captions, size=4)
    assert references.shape == (4, 4) and references[:, 0].tolist() == index.tolist()
    assert {captions[i] for i in references[0].tolist()} == {"a"} and len(set(references[0].tolist())) == 4
    assert {captions[i] for i in references[1].tolist()} == {"b"}  # two others, drawn with replacement
    assert references[2].tolist() == [9, 9, 9, 9]  # a caption seen once: only itself
    assert 2 not in references[3, 1:].tolist()  # a dropped caption draws others from every clip
