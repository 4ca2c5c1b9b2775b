"""Per-step log-probabilities: the DDIM step against diffusers' own ``DDIMScheduler.step``, the
log-density against an independent Normal, and trajectories of tiny SD and SDXL pipelines scored
again step by step."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler

import tiny_pipelines
from mmalign.errors import InvalidInputError
from mmalign.sampling.ddim import ddim_step, gaussian_kl, gaussian_log_prob
from mmalign.sampling.trajectories import (adapters_disabled, ddim_scheduler, sample_trajectories, step_log_probs,
                                           text_conditioning)


def scheduler(prediction_type="epsilon", **overrides):
    config = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, set_alpha_to_one=False,
                  steps_offset=1, clip_sample=False, timestep_spacing="trailing", prediction_type=prediction_type)
    ddim = DDIMScheduler(**{**config, **overrides})
    ddim.set_timesteps(10)
    return ddim


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("eta", [0.3, 1.0])
def test_step_mean_and_sample_equal_diffusers_ddim_step(prediction_type, eta):
    ddim = scheduler(prediction_type, rescale_betas_zero_snr=prediction_type == "v_prediction")
    generator = torch.Generator().manual_seed(0)
    sample, output = torch.randn(3, 4, 8, 8, generator=generator), torch.randn(3, 4, 8, 8, generator=generator)
    noise = torch.randn(3, 4, 8, 8, generator=generator)
    step_size = 1000 // 10
    for t in ddim.timesteps[[0, 4, -1]]:
        ours = ddim_step(ddim, output, int(t), int(t) - step_size, sample, eta=eta, prev_sample=None,
                         generator=torch.Generator().manual_seed(1))
        expected_mean = ddim.step(output, t, sample, eta=eta, variance_noise=torch.zeros_like(sample)).prev_sample
        torch.testing.assert_close(ours.mean, expected_mean, rtol=1e-5, atol=1e-5)
        # the same noise gives the same draw
        drawn = ddim.step(output, t, sample, eta=eta, variance_noise=noise).prev_sample
        replayed = ours.mean + ours.std * noise
        torch.testing.assert_close(replayed, drawn, rtol=1e-5, atol=1e-5)


def test_log_prob_equals_an_independent_normal_density():
    ddim = scheduler()
    generator = torch.Generator().manual_seed(0)
    sample, output = torch.randn(2, 4, 4, 4, generator=generator), torch.randn(2, 4, 4, 4, generator=generator)
    t = int(ddim.timesteps[3])
    step = ddim_step(ddim, output, t, t - 100, sample, eta=1.0, generator=generator, reduction="sum")
    normal = torch.distributions.Normal(step.mean.double(), step.std.double().expand_as(step.mean))
    expected = normal.log_prob(step.prev_sample.double()).sum((1, 2, 3))
    torch.testing.assert_close(step.log_prob.double(), expected, rtol=1e-6, atol=1e-4)
    mean_reduced = ddim_step(ddim, output, t, t - 100, sample, eta=1.0, prev_sample=step.prev_sample, reduction="mean")
    torch.testing.assert_close(mean_reduced.log_prob.double(), expected / (4 * 4 * 4), rtol=1e-6, atol=1e-5)


def test_gaussian_helpers_by_hand():
    # log N(1; 0, 2²) = −1/8 − log 2 − ½ log 2π
    value = gaussian_log_prob(torch.ones(1, 1), torch.zeros(1, 1), torch.tensor(2.0))
    assert value.item() == pytest.approx(-1 / 8 - math.log(2) - 0.5 * math.log(2 * math.pi), rel=1e-6)
    # KL of equal-variance Gaussians: (μp − μq)² / 2σ² = 9 / 8, averaged with a zero-difference element
    kl = gaussian_kl(torch.tensor([[3.0, 0.0]]), torch.zeros(1, 2), torch.tensor(2.0))
    assert kl.item() == pytest.approx(9 / 16)


def test_eta_zero_and_schedulers_without_a_log_prob_are_refused():
    ddim = scheduler()
    x = torch.randn(1, 4, 4, 4)
    with pytest.raises(InvalidInputError, match="eta: must be > 0"):
        ddim_step(ddim, x, 901, 801, x, eta=0.0)
    with pytest.raises(InvalidInputError, match="set_alpha_to_one"):
        one = scheduler(set_alpha_to_one=True)
        ddim_step(one, x, int(one.timesteps[-1]), -1, x, eta=1.0)
    flow = tiny_pipelines.build("sd")
    flow.scheduler = FlowMatchEulerDiscreteScheduler()
    with pytest.raises(InvalidInputError, match="no ᾱ schedule"):
        ddim_scheduler(flow, 4)
    with pytest.raises(InvalidInputError, match="UNet pipeline"):
        ddim_scheduler(tiny_pipelines.build("sd3"), 4)


def test_a_ddpm_family_scheduler_is_sampled_with_ddim_on_its_own_schedule():
    pipeline = tiny_pipelines.build("sd")
    pipeline.scheduler = EulerDiscreteScheduler.from_config(pipeline.scheduler.config)
    ddim = ddim_scheduler(pipeline, 4)
    assert isinstance(ddim, DDIMScheduler) and ddim.config.prediction_type == "v_prediction"
    torch.testing.assert_close(ddim.alphas_cumprod, pipeline.scheduler.alphas_cumprod)


@pytest.mark.parametrize("name", ["sd", "sdxl_turbo"])
def test_stored_steps_score_the_same_again_and_shared_starts_are_shared(name):
    pipeline = tiny_pipelines.build(name)
    prompts = ["a red circle", "a red circle", "a blue square"]
    start = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)).repeat(3, 1, 1, 1)
    trajectories = sample_trajectories(pipeline, prompts, num_inference_steps=3, guidance_scale=3.0,
                                       generator=torch.Generator().manual_seed(0), latents=start)
    assert trajectories.latents.shape == (3, 4, 4, 8, 8) and trajectories.log_probs.shape == (3, 3)
    assert not torch.equal(trajectories.latents[0, -1], trajectories.latents[1, -1]), "eta=1 must draw different paths"
    assert trajectories.images.shape == (3, 3, 16, 16) and trajectories.images.min() >= 0
    # score each stored step again, all steps of all trajectories in one shuffled batch
    ddim = ddim_scheduler(pipeline, 3)
    conditioning, unconditional = text_conditioning(pipeline, prompts)
    b, t = torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij")
    b, t = b.flatten(), t.flatten()
    again = step_log_probs(pipeline.unet, ddim, trajectories.latents[b, t], trajectories.latents[b, t + 1],
                           trajectories.timesteps[t], trajectories.prev_timesteps[t],
                           {k: v[b] for k, v in conditioning.items()}, unconditional, 3.0, eta=1.0)
    torch.testing.assert_close(again.view(3, 3), trajectories.log_probs, rtol=1e-4, atol=1e-4)


def test_reference_is_the_model_with_its_adapters_off():
    from mmalign.algorithms.lora import add_lora

    pipeline = tiny_pipelines.build("sd")
    prompts = ["a red circle"] * 2
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    conditioning, unconditional = text_conditioning(pipeline, prompts)
    timestep = torch.tensor([500, 500])
    with torch.no_grad():
        base = pipeline.unet(x, timestep, encoder_hidden_states=conditioning["encoder_hidden_states"]).sample
        add_lora(pipeline.unet, rank=2)
        for name, parameter in pipeline.unet.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.5)  # a trained adapter changes the output ...
        adapted = pipeline.unet(x, timestep, encoder_hidden_states=conditioning["encoder_hidden_states"]).sample
        with adapters_disabled(pipeline.unet):  # ... and the reference is the base again, exactly
            reference = pipeline.unet(x, timestep, encoder_hidden_states=conditioning["encoder_hidden_states"]).sample
        after = pipeline.unet(x, timestep, encoder_hidden_states=conditioning["encoder_hidden_states"]).sample
    assert not torch.allclose(adapted, base)
    assert torch.equal(reference, base)
    assert torch.equal(after, adapted), "the adapters must be back on after the reference pass"
    trajectories = sample_trajectories(pipeline, prompts, num_inference_steps=2, guidance_scale=2.0,
                                       generator=torch.Generator().manual_seed(0), with_reference=True)
    assert (trajectories.kl > 0).all() and (trajectories.ref_log_probs != trajectories.log_probs).any()


def test_posterior_paths_share_noise_within_a_pair_and_end_at_their_images():
    from mmalign.sampling.trajectories import posterior_trajectories

    ddim = scheduler()
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).repeat(3, 1, 1, 1)
    paths = posterior_trajectories(ddim, x0, torch.tensor([0, 0, 1]), torch.Generator().manual_seed(1))
    assert paths.shape == (3, 11, 4, 8, 8)
    assert torch.equal(paths[0], paths[1])          # one noise stream: one path
    assert not torch.allclose(paths[0, 1:], paths[2, 1:])  # another stream: another path
    final = ddim.alphas_cumprod[0]  # the last step lands on ᾱ_0 = 1 − β_0, not on x_0 exactly
    assert (paths[:, -1] - final.sqrt() * x0).abs().max() < 0.2
    # x_T is the forward process at the first timestep: nearly pure noise, unit variance
    many = posterior_trajectories(ddim, torch.zeros(512, 4, 8, 8), torch.arange(512), torch.Generator().manual_seed(2))
    assert abs(float(many[:, 0].std()) - 1.0) < 0.02
