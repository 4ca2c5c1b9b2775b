"""Flow-DPO, Flow-RWR and Flow-NRG: each loss and weighting against values computed by hand, the
shared ε and σ within a pair, the guidance formula on a toy field with a known reward gradient, the
configs' refusals, and all three methods end to end on tiny Wan (video), SD3 and Flux pipelines."""

import json
import math

import pytest
import torch

import tiny_pipelines
from mmalign.algorithms.flow_dpo import FlowDPO, FlowDPOConfig, beta_at, best_and_worst, flow_dpo, flow_dpo_loss
from mmalign.algorithms.flow_nrg import check_head_weights, guided_velocity, nrg_sample
from mmalign.algorithms.latent_reward import (LatentRewardConfig, LatentRewardModel, pairs_from_scored_groups,
                                              train_latent_reward)
from mmalign.algorithms.flow_rwr import FlowRWRConfig, flow_rwr, flow_rwr_loss, rwr_weights
from mmalign.errors import InvalidInputError

NAN = float("nan")
VIDEO = dict(height=16, width=16, num_frames=5, max_sequence_length=tiny_pipelines.TOKENS)


def softplus(x: float) -> float:  # −log σ(x), written out independently
    return math.log(1 + math.exp(-x))


# --- losses and weights by hand -------------------------------------------------------------------------

def test_flow_dpo_loss_by_hand_with_constant_and_time_beta():
    # errors: policy w 0.3, ref w 0.5, policy l 0.6, ref l 0.4 → margin (0.3−0.5) − (0.6−0.4) = −0.4
    args = [torch.tensor([v]) for v in (0.3, 0.5, 0.6, 0.4)]
    assert flow_dpo_loss(*args, beta=2.0).item() == pytest.approx(softplus(0.4), rel=1e-6)  # −β/2·margin = 0.4
    beta = beta_at(10.0, "time", torch.tensor([0.5]))  # β(1 − σ)² = 2.5
    assert beta.item() == pytest.approx(2.5)
    assert flow_dpo_loss(*args, beta=beta).item() == pytest.approx(softplus(0.5), rel=1e-6)
    assert beta_at(10.0, "constant", torch.tensor([0.9, 0.1])).tolist() == [10.0, 10.0]
    same = torch.zeros(3)
    torch.testing.assert_close(flow_dpo_loss(same, same, same, same), torch.full((3,), math.log(2)))


def test_flow_dpo_gradient_lowers_the_winners_error_and_raises_the_losers():
    chosen, rejected = torch.tensor([0.5], requires_grad=True), torch.tensor([0.5], requires_grad=True)
    flow_dpo_loss(chosen, torch.tensor([0.5]), rejected, torch.tensor([0.5]), beta=4.0).sum().backward()
    # d/de_w of softplus(β/2·(e_w − e_l)) at 0 = β/2·σ(0) = 1
    assert chosen.grad.item() == pytest.approx(1.0) and rejected.grad.item() == pytest.approx(-1.0)


def test_best_and_worst_pairs_skip_constant_and_unscored_groups():
    rewards = torch.tensor([[0.1, 0.9, 0.4], [0.2, 0.2, 0.2], [0.3, NAN, 0.1], [-1.0, -3.0, 2.0]])
    usable, best, worst = best_and_worst(rewards)
    assert usable.tolist() == [True, False, False, True] and best.tolist() == [1, 2] and worst.tolist() == [0, 1]


def test_rwr_weights_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [0.0, NAN, 1.0]])
    weights = rwr_weights(rewards, temperature=1.0, normalize="group")
    # group 1 standardised (unbiased std 1): z = −1, 0, 1, so exp(z) scaled to mean 1 over the
    # scored samples; the constant and the unscored group weigh 0
    exp_z = torch.tensor([math.exp(-1), 1.0, math.e])
    torch.testing.assert_close(weights[0], exp_z / exp_z.mean())
    assert weights[1:].abs().sum() == 0
    half = torch.tensor([math.exp(-0.5), 1.0, math.exp(0.5)])
    torch.testing.assert_close(rwr_weights(rewards[:1], temperature=2.0)[0], half / half.mean())
    raw = torch.tensor([math.e, math.e**2, math.e**3])
    torch.testing.assert_close(rwr_weights(rewards[:1], normalize="none")[0], raw / raw.mean())
    torch.testing.assert_close(rwr_weights(rewards, weighting="best"),
                               torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    huge = rwr_weights(torch.tensor([[1000.0, 900.0]]), normalize="none")  # exp(1000) would overflow
    assert torch.isfinite(huge).all() and huge[0, 0] == pytest.approx(2.0)


def test_flow_rwr_loss_is_the_mean_of_weighted_errors():
    errors, weights = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 0.0, 2.0])
    assert flow_rwr_loss(errors, weights).item() == pytest.approx((1 * 1 + 2 * 4) / 3)


# --- the guidance formula ------------------------------------------------------------------------------

def test_guided_velocity_on_a_toy_field_with_a_known_reward_gradient():
    """v(x) = −x (a flow to 0), r(x) = −‖x − c‖²/2 so ∇r = c − x: ṽ = v − w·σ/(1−σ)·(c − x)."""
    x, c = torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, 0.5]])
    x.requires_grad_(True)
    reward = -0.5 * ((x - c) ** 2).sum()
    gradient = torch.autograd.grad(reward, x)[0]
    sigma, weight = 0.2, 0.5
    guided = guided_velocity(-x.detach(), gradient, torch.tensor([sigma]), weight)
    expected = -x.detach() - weight * sigma / (1 - sigma) * (c - x.detach())
    torch.testing.assert_close(guided, expected)
    # an Euler step towards data (σ' < σ) then raises the reward
    step = x.detach() + (0.1 - sigma) * guided
    plain = x.detach() + (0.1 - sigma) * -x.detach()
    assert -((step - c) ** 2).sum() > -((plain - c) ** 2).sum()
    # at σ = 1 the factor is infinite: that row is left unguided
    torch.testing.assert_close(guided_velocity(-x.detach(), gradient, torch.tensor([1.0]), weight), -x.detach())


def test_head_weights_naming_missing_heads_are_refused():
    assert check_head_weights({"VQ": 1, "TA": 0.5}, ("VQ", "MQ", "TA"), "shapes-video-reward") == {"VQ": 1.0, "TA": 0.5}
    with pytest.raises(InvalidInputError, match="no head 'AQ'.*VQ, MQ, TA"):
        check_head_weights({"AQ": 1.0}, ("VQ", "MQ", "TA"), "shapes-video-reward")
    with pytest.raises(InvalidInputError, match="at least one head"):
        check_head_weights({}, ("VQ",), "r")


# --- configs --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("beta", 0.0, "beta: must be > 0"), ("beta_schedule", "linear", "beta_schedule"), ("use_lora", False, "LoRA disabled"),
    ("group_size", 1, "group_size"), ("logit_std", 0.0, "logit_std"),
])
def test_flow_dpo_config_refusals(field, value, message):
    with pytest.raises(InvalidInputError, match=message):
        FlowDPOConfig(**{field: value})


def test_flow_configs_cite_the_paper_defaults():
    config = FlowDPOConfig()
    assert (config.beta, config.beta_schedule, config.rank, config.lora_alpha) == (500.0, "constant", 64, 128)
    with pytest.raises(InvalidInputError, match="weighting"):
        FlowRWRConfig(weighting="softmax")
    with pytest.raises(InvalidInputError, match="temperature"):
        FlowRWRConfig(temperature=0)


# --- end to end on tiny pipelines ---------------------------------------------------------------------

def tiny_run(tmp_path, name="wan", **overrides):
    path = tiny_pipelines.save(name, tmp_path / name)
    size = {k: v for k, v in VIDEO.items() if k != "max_sequence_length"} if name == "wan" else {"height": 16, "width": 16}
    return dict(dict(model=path, num_iterations=1, prompts_per_iteration=2, group_size=2, num_inference_steps=2,
                     num_eval_prompts=2, report_to="none", rank=4, lora_alpha=8, train_batch_size=2,
                     output_dir=str(tmp_path / "run"), **size), **overrides)


def test_winner_and_loser_share_noise_and_sigma(tmp_path, monkeypatch):
    from mmalign.algorithms.finetune import finetune

    seen = []
    original = FlowDPO.flow_errors

    def spy(self, module, x0, noise, sigmas, conditioning, reference=False):
        seen.append((noise.clone(), sigmas.clone()))
        return original(self, module, x0, noise, sigmas, conditioning, reference)

    monkeypatch.setattr(FlowDPO, "flow_errors", spy)
    finetune(FlowDPO(FlowDPOConfig(**tiny_run(tmp_path, prompts_per_iteration=4, train_batch_size=4, eval_every=0))))
    noise, sigmas = seen[0]
    pairs = len(sigmas) // 2
    assert pairs >= 2
    torch.testing.assert_close(noise[:pairs], noise[pairs:])
    torch.testing.assert_close(sigmas[:pairs], sigmas[pairs:])
    assert not torch.equal(noise[0], noise[1]) and sigmas[0] != sigmas[1]  # but not across pairs


def test_flow_dpo_and_rwr_run_on_a_tiny_wan_pipeline(tmp_path):
    dpo = flow_dpo(FlowDPOConfig(**tiny_run(tmp_path / "dpo")))
    assert dpo[-1]["pairs"] >= 1 and dpo[-1]["loss"] == pytest.approx(math.log(2), abs=1e-3)  # LoRA starts at zero
    assert {"shapes_eval", "shapes_eval/direction", "eval_proxy"} <= dpo[-1].keys()
    assert (tmp_path / "dpo" / "run" / "pytorch_lora_weights.safetensors").is_file()
    rwr = flow_rwr(FlowRWRConfig(**tiny_run(tmp_path / "rwr", num_iterations=2)))
    assert len(rwr) == 2 and all(math.isfinite(row["loss"]) for row in rwr)
    sft = flow_rwr(FlowRWRConfig(**tiny_run(tmp_path / "sft", weighting="best")))
    assert sft[-1]["samples"] == 2  # one winner per prompt


@pytest.mark.parametrize("name", ["sd3", "flux_schnell"])
def test_flow_dpo_runs_on_tiny_image_flow_pipelines(tmp_path, name):
    history = flow_dpo(FlowDPOConfig(**tiny_run(tmp_path, name, reward="shapes-clip", beta=100.0)))
    assert history[-1]["pairs"] >= 1 and "shapes_eval" in history[-1]


def test_an_image_reward_for_a_video_model_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="scores image, not video"):
        flow_dpo(FlowDPOConfig(**tiny_run(tmp_path, reward="shapes-clip")))
    with pytest.raises(InvalidInputError, match="scores video, not image"):
        flow_dpo(FlowDPOConfig(**tiny_run(tmp_path / "sd3", "sd3")))


def test_a_frame_count_for_an_image_model_is_refused(tmp_path):
    from mmalign.rewards import load_reward

    with pytest.raises(InvalidInputError, match="num_frames: this pipeline generates images; leave num_frames unset"):
        flow_dpo(FlowDPOConfig(**tiny_run(tmp_path, "sd3", reward="shapes-clip", num_frames=5)))
    with pytest.raises(InvalidInputError, match="num_frames: this pipeline generates images"):
        nrg_sample(tiny_pipelines.build("sd3"), ["a red circle"], load_reward("shapes-clip"), {"reward": 1.0}, 1, 1.0,
                   num_frames=5)


def test_a_non_flow_model_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="SD3-, Flux- or Wan-class"):
        flow_dpo(FlowDPOConfig(**tiny_run(tmp_path, "sd", reward="shapes-clip")))


def write_pairs(folder, rows):
    from mmalign.video_files import write_video

    lines = []
    for i, (prompt, left, right) in enumerate(rows):
        write_video(left, folder / f"l{i}.gif")
        write_video(right, folder / f"r{i}.gif")
        lines.append(json.dumps({"prompt": prompt, "left": f"l{i}.gif", "right": f"r{i}.gif", "choice": "left"}))
    (folder / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "pairs.jsonl"


def test_offline_flow_dpo_from_a_jsonl_of_gif_pairs(tmp_path):
    clip = torch.rand(5, 3, 16, 16)
    pairs = write_pairs(tmp_path, [("a red circle moving left", clip, clip.flip(0)), ("a square moving up", clip, 1 - clip)])
    history = flow_dpo(FlowDPOConfig(**tiny_run(tmp_path, preferences=str(pairs), reward=None, eval_every=0)))
    assert history[-1]["pairs"] == 2 and history[-1]["loss"] == pytest.approx(math.log(2), abs=1e-3)


def test_a_pair_of_videos_of_different_lengths_is_refused(tmp_path):
    pairs = write_pairs(tmp_path, [("a red circle moving left", torch.rand(5, 3, 16, 16), torch.rand(3, 3, 16, 16))])
    with pytest.raises(InvalidInputError, match="pair 1.*different shapes.*same frame count and size"):
        flow_dpo(FlowDPOConfig(**tiny_run(tmp_path, preferences=str(pairs), reward=None)))


def test_a_video_length_the_temporal_patches_do_not_fit_is_refused(tmp_path):
    from mmalign.rewards import load_reward
    from mmalign.sampling.flow import check_num_frames

    pipeline = tiny_pipelines.build("wan_temporal_patches")
    frames = pipeline("a red circle moving left", num_inference_steps=1, output_type="pt",
                      **{**VIDEO, "num_frames": 11}).frames
    assert frames.shape[1] == 11  # 6 latent frames: two temporal patches
    assert check_num_frames(pipeline, 5) == 5 and check_num_frames(pipeline, 4) == 5  # as WanPipeline rounds 4
    with pytest.raises(InvalidInputError, match=r"num_frames: 7 frames make 4 latent frames.*3 at a time. "
                                                r"Fix: 5, 11 or 17 frames"):
        nrg_sample(pipeline, ["a red circle moving left"], load_reward("shapes-video-reward"), {"TA": 1.0}, 1, 1.0,
                   **{**VIDEO, "num_frames": 7})
    with pytest.raises(InvalidInputError, match=r"6 frames \(WanPipeline rounds them to 7\) make 4 latent frames"):
        check_num_frames(pipeline, 6)
    with pytest.raises(InvalidInputError, match="num_frames: must be at least 1, got 0"):
        check_num_frames(pipeline, 0)
    with pytest.raises(InvalidInputError, match="num_frames: 7 frames make 4 latent frames"):
        flow_dpo(FlowDPOConfig(**tiny_run(tmp_path / "short", "wan_temporal_patches", height=16, width=16, num_frames=7)))
    with pytest.raises(InvalidInputError, match=r"num_frames: 81 frames \(the pipeline's default\) make 41"):
        flow_dpo(FlowDPOConfig(**tiny_run(tmp_path / "default", "wan_temporal_patches", height=16, width=16)))
    clip = torch.rand(7, 3, 16, 16)
    pairs = write_pairs(tmp_path, [("a red circle moving left", clip, clip.flip(0))])
    with pytest.raises(InvalidInputError, match="preferences: 7 frames make 4 latent frames"):
        flow_dpo(FlowDPOConfig(**tiny_run(tmp_path / "offline", "wan_temporal_patches", height=16, width=16,
                                          num_frames=5, preferences=str(pairs), reward=None)))


# --- Flow-NRG ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sd3", "flux_schnell", "wan"])
def test_nrg_with_zero_weights_is_the_stock_pipeline_and_weights_change_it(name):
    from mmalign.rewards import load_reward

    pipeline = tiny_pipelines.build(name)
    video = name == "wan"
    reward = load_reward("shapes-video-reward" if video else "shapes-clip")
    size = VIDEO if video else {"height": 16, "width": 16, "max_sequence_length": tiny_pipelines.TOKENS}
    prompts = ["a red circle moving left", "a blue square moving up"]
    call = {k: v for k, v in size.items()}
    stock = pipeline(prompts, num_inference_steps=3, guidance_scale=2.0, generator=torch.Generator().manual_seed(0),
                     output_type="latent", **call)
    stock = stock.frames if video else stock.images
    heads = ("VQ", "MQ", "TA") if video else ("reward",)
    plain = nrg_sample(pipeline, prompts, reward, dict.fromkeys(heads, 0.0), 3, 2.0, torch.Generator().manual_seed(0), **size)
    torch.testing.assert_close(plain.latents, stock, atol=1e-5, rtol=1e-5)
    guided = nrg_sample(pipeline, prompts, reward, dict.fromkeys(heads, 50.0), 3, 2.0, torch.Generator().manual_seed(0), **size)
    assert not torch.allclose(guided.latents, stock)  # whether it helps is the benchmark's question, on a trained model
    with pytest.raises(InvalidInputError, match="no head"):
        nrg_sample(pipeline, prompts, reward, {"aesthetics": 1.0}, 2, 2.0, **size)


def test_a_latent_reward_learns_a_preference_from_identically_noised_pairs():
    """Bradley-Terry on pairs where the preferred latent is brighter in channel 0: the trained model
    ranks fresh pairs the same way at moderate noise."""
    pipeline = tiny_pipelines.build("wan")
    torch.manual_seed(0)
    model = LatentRewardModel(LatentRewardConfig(latent_channels=4, text_dim=32, heads=("VQ", "TA"), width=16))
    def pair():
        base = torch.randn(4, 3, 8, 8)
        shifted = base.clone()
        shifted[0] += 1.0
        return {"prompt": "a red circle moving left", "chosen": shifted, "rejected": base, "heads": ("VQ",)}
    losses = train_latent_reward(model, pipeline, [pair() for _ in range(64)], steps=150, batch_size=16, progress=False)
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20
    test = [pair() for _ in range(32)]
    text = torch.zeros(32, 4, 32)
    text[:, 0] = 1.0
    sigmas = torch.full((32,), 0.3)
    noise = torch.randn(32, 4, 3, 8, 8)
    with torch.no_grad():
        chosen = model(torch.stack([p["chosen"] for p in test]) * 0.7 + 0.3 * noise, sigmas, text)["VQ"]
        rejected = model(torch.stack([p["rejected"] for p in test]) * 0.7 + 0.3 * noise, sigmas, text)["VQ"]
    assert (chosen > rejected).float().mean() >= 0.9


def test_nrg_with_a_latent_reward_model_and_the_sampler_it_needs():
    from diffusers import UniPCMultistepScheduler

    pipeline = tiny_pipelines.build("wan")
    torch.manual_seed(0)
    model = LatentRewardModel(LatentRewardConfig(latent_channels=4, text_dim=32, width=8))
    prompts = ["a red circle moving left"]
    plain = nrg_sample(pipeline, prompts, model, {"TA": 0.0}, 3, 2.0, torch.Generator().manual_seed(0), **VIDEO)
    guided = nrg_sample(pipeline, prompts, model, {"TA": 5.0}, 3, 2.0, torch.Generator().manual_seed(0), **VIDEO)
    assert plain.samples.shape == (1, 5, 3, 16, 16) and not torch.allclose(plain.latents, guided.latents)
    pipeline.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    with pytest.raises(InvalidInputError, match=r"steps with Euler.*FlowMatchEulerDiscreteScheduler\(shift=3\)"):
        nrg_sample(pipeline, prompts, model, {"TA": 1.0}, 2, **VIDEO)


def test_nrg_refuses_a_reward_of_the_other_modality_and_a_non_differentiable_one():
    from mmalign.rewards import load_reward

    pipeline = tiny_pipelines.build("wan")
    with pytest.raises(InvalidInputError, match="scores image, but this pipeline generates videos"):
        nrg_sample(pipeline, ["a red circle moving left"], load_reward("shapes-clip"), {"reward": 1.0}, 2, **VIDEO)
    with pytest.raises(InvalidInputError, match="not differentiable"):
        nrg_sample(tiny_pipelines.build("sd3"), ["a red circle"], load_reward("jpeg-compressibility"), {"reward": 1.0}, 2,
                   height=16, width=16)


def test_pairs_from_scored_groups_label_each_head_by_its_own_winner():
    latents = torch.arange(3.0).view(1, 3, 1).expand(1, 3, 2)  # three samples of one prompt
    heads = {"VQ": torch.tensor([[0.1, 0.5, 0.3]]), "TA": torch.tensor([[0.9, 0.2, 0.2]])}
    pairs = pairs_from_scored_groups(["a red circle moving left"], latents, heads)
    labels = {(int(p["chosen"][0]), int(p["rejected"][0])): p["heads"] for p in pairs}
    # (0,1): VQ prefers 1, TA prefers 0; (0,2): VQ 2, TA 0; (1,2): VQ 1, TA tie (unlabelled)
    assert labels == {(0, 1): ("TA",), (1, 0): ("VQ",), (0, 2): ("TA",), (2, 0): ("VQ",), (1, 2): ("VQ",)}


def test_latent_reward_saves_and_loads_through_safetensors(tmp_path):
    model = LatentRewardModel(LatentRewardConfig(latent_channels=4, text_dim=8, heads=("VQ",), width=8))
    model.save_pretrained(tmp_path)
    loaded = LatentRewardModel.from_pretrained(tmp_path)
    x, text = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 5, 8)
    torch.testing.assert_close(loaded(x, torch.tensor([0.2, 0.7]), text)["VQ"], model.eval()(x, torch.tensor([0.2, 0.7]), text)["VQ"])
    with pytest.raises(InvalidInputError, match="config.json and model.safetensors"):
        LatentRewardModel.from_pretrained(tmp_path / "missing")
