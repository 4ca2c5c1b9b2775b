import math
import warnings

import pytest
import torch

import tiny_pipelines
from mmalign.algorithms import ReNOConfig, noise_regularizer, optimize_noise, reno
from mmalign.algorithms.reno import clip_per_image
from mmalign.errors import InvalidInputError, NotDifferentiableError
from mmalign.rewards import RewardOutput, load_reward
from toys import MeanPixelReward

FAMILIES = ["sd_turbo", "sdxl_turbo", "pixart", "flux_schnell"]


def test_regularizer_and_its_gradient_match_hand_computed_values():
    # z=(3,4): d=2, ‖z‖=5 → ½·25 − 1·ln 5; gradient z·(1 − (d−1)/‖z‖²) = (3,4)·24/25
    # z=(1,1,1,1): d=4, ‖z‖=2 → ½·4 − 3·ln 2; gradient z·(1 − 3/4)
    first = torch.tensor([[3.0, 4.0]], requires_grad=True)
    second = torch.ones(1, 2, 2, requires_grad=True)
    values = torch.cat([noise_regularizer(first), noise_regularizer(second)])
    torch.testing.assert_close(values, torch.tensor([12.5 - math.log(5), 2.0 - 3 * math.log(2)]))
    values.sum().backward()
    torch.testing.assert_close(first.grad, torch.tensor([[2.88, 3.84]]))
    torch.testing.assert_close(second.grad, torch.full((1, 2, 2), 0.25))


def test_regularizer_stays_finite_in_fp16_at_sdxl_size():
    latents = torch.randn(1, 4, 128, 128).half()  # ‖z‖² ≈ 65,536 overflows fp16
    assert torch.isfinite(noise_regularizer(latents)).all()


def test_gradient_is_clipped_per_image():
    gradient = torch.tensor([[3.0, 4.0], [0.03, 0.04]])
    clip_per_image(gradient, 0.1)
    torch.testing.assert_close(gradient, torch.tensor([[0.06, 0.08], [0.03, 0.04]]), atol=1e-6, rtol=1e-5)


class ScriptedObjective:
    """Rewards read from a script, one row per call, tied to the images so gradients flow."""

    def __init__(self, script):
        self.script, self.calls = torch.tensor(script, dtype=torch.float32), 0

    def __call__(self, images):
        row = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        reward = row + 0.0 * images.flatten(1).sum(1)
        return RewardOutput(reward=reward, heads={"scripted": reward})


def recording_render(renders):
    def render(latents):
        images = torch.sigmoid(latents)
        renders.append(images.detach().clone())
        return images
    return render


def test_the_best_iterate_is_returned_per_image_not_the_last():
    renders = []
    objective = ScriptedObjective([[0.1, 0.1], [0.5, 0.2], [0.3, 0.3], [0.2, 0.9], [0.0, 0.0]])
    result = optimize_noise(recording_render(renders), objective, torch.randn(2, 1, 2, 2), ReNOConfig(iterations=5),
                            progress=False)
    assert result.best_iteration == [1, 3]
    torch.testing.assert_close(result.images[0], renders[1][0])
    torch.testing.assert_close(result.images[1], renders[3][1])
    torch.testing.assert_close(result.base_images, renders[0])
    assert len(result.history) == 5 and result.rewards_at(result.best_iteration) == {"scripted": [0.5, pytest.approx(0.9)]}


def test_a_batch_is_the_same_as_separate_runs():
    target = torch.tensor([0.2, 0.8])

    def objective(images):
        reward = -(images.flatten(1).mean(1) - target[: len(images)].to(images)) ** 2 if len(images) == 2 else \
            -(images.flatten(1).mean(1) - objective.target) ** 2
        return RewardOutput(reward=reward * 100, heads={})

    noise = torch.randn(2, 4, 3, 3)
    config = ReNOConfig(iterations=6)
    together = optimize_noise(torch.sigmoid, objective, noise, config, progress=False)
    for index in range(2):
        objective.target = target[index]
        alone = optimize_noise(torch.sigmoid, objective, noise[index : index + 1], config, progress=False)
        torch.testing.assert_close(alone.latents[0], together.latents[index])
    assert together.latents.ne(noise).any()


def test_nan_reward_stops_and_returns_the_best_so_far():
    renders = []
    objective = ScriptedObjective([[0.1], [0.4], [float("nan")], [0.9]])
    with pytest.warns(RuntimeWarning, match="NaN"):
        result = optimize_noise(recording_render(renders), objective, torch.randn(1, 4), ReNOConfig(iterations=4),
                                progress=False)
    assert len(result.history) == 3 and result.best_iteration == [1]
    torch.testing.assert_close(result.images, renders[1])


def test_zero_iterations_return_the_base_image():
    renders = []
    result = optimize_noise(recording_render(renders), ScriptedObjective([[1.0]]), torch.randn(1, 4),
                            ReNOConfig(iterations=0), progress=False)
    assert result.history == [] and len(renders) == 1
    torch.testing.assert_close(result.images, renders[0])


def test_early_stopping_after_patience_without_improvement():
    objective = ScriptedObjective([[0.5], [0.4], [0.3], [0.2], [0.1], [0.0]])
    result = optimize_noise(torch.sigmoid, objective, torch.randn(1, 4),
                            ReNOConfig(iterations=6, early_stopping_patience=2), progress=False)
    assert len(result.history) == 3 and result.best_iteration == [0]


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_the_noise_and_the_reward_rises(family):
    pipeline = tiny_pipelines.build(family)
    reward = MeanPixelReward()
    call_kwargs = tiny_pipelines.CALL_KWARGS[family]
    # no regulariser: every change of the noise is the reward's doing
    result = reno(pipeline, ["a red circle", "two blue squares"], reward, config=ReNOConfig(iterations=4, regularization_weight=0),
                  generator=torch.Generator().manual_seed(0), progress=False, **call_kwargs)
    first, last = result.history[0]["weighted_reward"], result.history[-1]["weighted_reward"]
    assert all(b > a for a, b in zip(first, last)), (first, last)
    assert result.best_iteration == [3, 3]
    assert result.latents.shape[0] == 2 and not torch.equal(result.images, result.base_images)


def test_reno_is_deterministic_for_a_seed():
    pipeline = tiny_pipelines.build("sd_turbo")

    def run(seed):
        return reno(pipeline, "a red circle", MeanPixelReward(), config=ReNOConfig(iterations=3),
                    generator=torch.Generator().manual_seed(seed), progress=False).images

    torch.testing.assert_close(run(0), run(0), atol=0, rtol=0)
    assert not torch.allclose(run(0), run(1))


def test_gradient_checkpointing_gives_the_same_result_and_is_switched_back_off():
    pipeline = tiny_pipelines.build("sd_turbo")

    def run(checkpointing):
        return reno(pipeline, "a red circle", MeanPixelReward(), config=ReNOConfig(iterations=3, gradient_checkpointing=checkpointing),
                    generator=torch.Generator().manual_seed(0), progress=False).latents

    torch.testing.assert_close(run(True), run(False), atol=1e-5, rtol=1e-4)
    assert not pipeline.unet.is_gradient_checkpointing and not pipeline.vae.is_gradient_checkpointing


def test_bad_input_gets_errors_that_name_the_fix():
    pipeline = tiny_pipelines.build("sd_turbo")
    with pytest.raises(NotDifferentiableError, match="best-of-N"):
        reno(pipeline, "a red circle", load_reward("jpeg-compressibility"), progress=False)
    with pytest.raises(InvalidInputError, match="reward_weights: got 2 weights for 1 rewards"):
        reno(pipeline, "a red circle", [MeanPixelReward()], reward_weights=[1.0, 2.0], progress=False)
    with pytest.raises(InvalidInputError, match="iterations"):
        ReNOConfig(iterations=-1)
    with pytest.raises(InvalidInputError, match="latents: got 2 noises for 1 prompts"):
        reno(pipeline, "a red circle", MeanPixelReward(), latents=torch.randn(2, 4, 8, 8), progress=False)


def test_a_multi_step_schedule_warns_about_its_cost():
    pipeline = tiny_pipelines.build("sd_turbo")
    with pytest.warns(UserWarning, match="backpropagates through all 2 denoising steps"):
        reno(pipeline, "a red circle", MeanPixelReward(), config=ReNOConfig(iterations=1), num_inference_steps=2,
             progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        reno(pipeline, "a red circle", MeanPixelReward(), config=ReNOConfig(iterations=1), progress=False)


def test_renders_show_no_progress_bar_of_their_own_and_the_setting_comes_back(capsys):
    pipeline = tiny_pipelines.build("sd_turbo")
    pipeline.set_progress_bar_config(disable=False, desc="mine")
    reno(pipeline, "a red circle", MeanPixelReward(), config=ReNOConfig(iterations=3), progress=False)
    assert "mine" not in capsys.readouterr().err
    assert pipeline._progress_bar_config == {"disable": False, "desc": "mine"}
