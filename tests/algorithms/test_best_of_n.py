import pytest
import torch

import tiny_pipelines
from mmalign.algorithms import best_of_n
from mmalign.errors import InvalidInputError
from mmalign.rewards import load_reward
from toys import MeanPixelReward


def test_the_kept_image_is_the_argmax_of_its_candidates():
    pipeline = tiny_pipelines.build("sd_turbo")
    result = best_of_n(pipeline, ["a red circle", "two blue squares"], MeanPixelReward(), num_candidates=5,
                       batch_size=2, generator=torch.Generator().manual_seed(0), keep_candidates=True, progress=False)
    assert result.scores.shape == (2, 5) and result.candidates.shape == (2, 5, 3, 16, 16)
    brightness = result.candidates.mean(dim=(2, 3, 4))
    torch.testing.assert_close(result.scores, brightness)  # the reward is the mean pixel
    assert result.best_index.tolist() == brightness.argmax(1).tolist()
    for row in range(2):
        torch.testing.assert_close(result.images[row], result.candidates[row, result.best_index[row]])


def test_a_non_differentiable_reward_is_fine_and_results_repeat_for_a_seed():
    pipeline = tiny_pipelines.build("sd_turbo")

    def run(seed):
        return best_of_n(pipeline, "a red circle", load_reward("jpeg-compressibility"), num_candidates=3,
                         generator=torch.Generator().manual_seed(seed), progress=False)

    first, again = run(0), run(0)
    torch.testing.assert_close(first.scores, again.scores, atol=0, rtol=0)
    assert not torch.equal(first.scores, run(1).scores)


def test_bad_counts_are_refused():
    pipeline = tiny_pipelines.build("sd_turbo")
    with pytest.raises(InvalidInputError, match="num_candidates"):
        best_of_n(pipeline, "a red circle", MeanPixelReward(), num_candidates=0)
    with pytest.raises(InvalidInputError, match="reward_weights: got 1 weights for 2 rewards"):
        best_of_n(pipeline, "a red circle", [MeanPixelReward(), MeanPixelReward()], reward_weights=[1.0])
