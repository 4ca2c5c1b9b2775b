"""The rectified-flow family adapters: velocity, noising, encoding and decoding agree with the
stock SD3, Flux and Wan pipelines; the logit-normal σ sampler has the distribution it claims;
non-flow pipelines and schedulers are refused."""

import math

import pytest
import torch

import tiny_pipelines
from mmalign.errors import InvalidInputError
from mmalign.sampling import flow

FAMILIES = ["sd3", "flux_schnell", "wan"]
PROMPTS = ["a red circle moving left", "a blue square moving up"]


def stock_latents(pipeline, name: str, steps: int, seed: int = 0) -> torch.Tensor:
    kwargs = tiny_pipelines.CALL_KWARGS[name] | {"num_inference_steps": steps, "guidance_scale": 1.0}
    output = pipeline(PROMPTS, output_type="latent", generator=torch.Generator().manual_seed(seed), **kwargs)
    return output.frames if name == "wan" else output.images


@pytest.mark.parametrize("name", FAMILIES)
def test_an_euler_loop_on_velocity_reproduces_the_stock_pipeline(name):
    """One step from pure noise: x₀ = ε − v(ε, σ=1), exactly what the stock pipeline computes, so the
    forward's argument names, the timestep scale and the latent layout are each family's own."""
    pipeline = tiny_pipelines.build(name)
    sampled = stock_latents(pipeline, name, steps=1)
    from mmalign.algorithms.flow_nrg import default_size, initial_latents

    size = default_size(pipeline, 16, 16, 5 if name == "wan" else None)
    noise = initial_latents(pipeline, len(PROMPTS), torch.Generator().manual_seed(0), **size)
    conditioning = flow.flow_conditioning(pipeline, PROMPTS, max_sequence_length=tiny_pipelines.TOKENS)
    with torch.no_grad():
        v = flow.velocity(pipeline, pipeline.transformer, noise, torch.ones(len(PROMPTS)), conditioning)
    torch.testing.assert_close(noise - v, sampled, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_encode_inverts_decode_in_layout_and_refuses_the_other_modality(name):
    pipeline = tiny_pipelines.build(name)
    latents = stock_latents(pipeline, name, steps=1)
    pixels = flow.decode(pipeline, latents)
    video = name == "wan"
    assert pixels.shape[:2] == ((2, 5) if video else (2, 3)) and 0 <= pixels.min() and pixels.max() <= 1
    assert flow.encode(pipeline, pixels).shape == latents.shape
    wrong = pixels[:, 0] if video else pixels.unsqueeze(1).repeat(1, 5, 1, 1, 1)
    with pytest.raises(InvalidInputError, match="takes videos" if video else "takes images"):
        flow.encode(pipeline, wrong)


def test_noised_is_the_straight_line_between_data_and_noise():
    x0, noise = torch.full((2, 3), 2.0), torch.full((2, 3), -1.0)
    result = flow.noised(x0, noise, torch.tensor([0.0, 0.25]))
    torch.testing.assert_close(result, torch.tensor([[2.0] * 3, [0.75 * 2 - 0.25] * 3]))


def test_logit_normal_sigmas_have_the_logit_normal_law_then_the_shift():
    from diffusers import FlowMatchEulerDiscreteScheduler

    n = 40_000
    plain = flow.logit_normal_sigmas(FlowMatchEulerDiscreteScheduler(shift=1.0), n, torch.Generator().manual_seed(0),
                                     mean=0.5, std=0.8)
    logits = torch.log(plain / (1 - plain))
    assert logits.mean().item() == pytest.approx(0.5, abs=0.02) and logits.std().item() == pytest.approx(0.8, abs=0.02)
    shifted = flow.logit_normal_sigmas(FlowMatchEulerDiscreteScheduler(shift=3.0), n, torch.Generator().manual_seed(0),
                                       mean=0.5, std=0.8)
    # the shift is monotone, so quantiles map: P(σ' ≤ shift(sigmoid(0.5 + 0.8z))) = Φ(z)
    for z in (-1.0, 0.0, 1.0):
        s = 1 / (1 + math.exp(-(0.5 + 0.8 * z)))
        bound = 3 * s / (1 + 2 * s)
        assert (shifted <= bound).float().mean().item() == pytest.approx(0.5 * (1 + math.erf(z / math.sqrt(2))), abs=0.01)


def test_flux_dynamic_shift_uses_mu_from_the_token_count():
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    mu = flow.dynamic_shift_mu(scheduler, 4096)
    assert mu == pytest.approx(1.15)
    sigma = torch.tensor([0.5])
    assert flow.shift_sigmas(scheduler, sigma, 4096).item() == pytest.approx(math.exp(1.15) / (math.exp(1.15) + 1))
    with pytest.raises(InvalidInputError, match="image_seq_len"):
        flow.shift_sigmas(scheduler, sigma)


def test_non_flow_pipelines_and_schedulers_are_refused():
    from diffusers import DDIMScheduler

    with pytest.raises(InvalidInputError, match="SD3-, Flux- or Wan-class"):
        flow.check_flow_pipeline(tiny_pipelines.build("sd_turbo"), "Flow-DPO")
    wan = tiny_pipelines.build("wan")
    wan.scheduler = DDIMScheduler()
    with pytest.raises(InvalidInputError, match="rectified-flow scheduler.*FlowMatchEulerDiscreteScheduler"):
        flow.check_flow_pipeline(wan, "Flow-DPO")
