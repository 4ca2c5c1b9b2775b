"""D3PO and PRDP: each loss against values computed by hand (clamp and max-clip edges included),
their configs' refusals, and both methods end to end on tiny SD and SDXL pipelines through the shared
loop: preferences from a reward, from a store and from a file, checkpoints, kill-and-resume."""

import json
import math

import pytest
import torch

import tiny_pipelines
from mmalign.algorithms.d3po import D3PO, D3POConfig, d3po, d3po_loss, simulated_choices
from mmalign.algorithms.finetune import finetune
from mmalign.algorithms.prdp import PRDP, PRDPConfig, prdp, prdp_loss
from mmalign.errors import InvalidInputError

NAN = float("nan")


def softplus(x: float) -> float:  # −log σ(x) = log(1 + e^{−x}), written out independently
    return math.log(1 + math.exp(-x))


# --- D3PO's loss by hand -------------------------------------------------------------------------------

def test_d3po_loss_inside_the_band_is_dpo_on_the_log_ratios():
    log = math.log
    loss = d3po_loss(torch.tensor([log(1.05)]), torch.tensor([0.0]), torch.tensor([log(0.97)]), torch.tensor([0.0]),
                     beta=0.1, clip_range=0.1)
    assert loss.item() == pytest.approx(softplus(0.1 * (log(1.05) - log(0.97))), rel=1e-6)
    # equal policy and reference: the logit is 0 and the loss log 2
    zero = torch.zeros(3)
    torch.testing.assert_close(d3po_loss(zero, zero, zero, zero), torch.full((3,), math.log(2)))


def test_d3po_clamp_caps_the_ratio_and_zeroes_its_gradient():
    policy_chosen = torch.tensor([math.log(1.3), math.log(1.02)], requires_grad=True)  # first leaves the band
    policy_rejected = torch.tensor([math.log(0.5), math.log(0.99)], requires_grad=True)  # first below 1 − ε
    loss = d3po_loss(policy_chosen, torch.zeros(2), policy_rejected, torch.zeros(2), beta=0.1, clip_range=0.1)
    expected = [softplus(0.1 * (math.log(1.1) - math.log(0.9))), softplus(0.1 * (math.log(1.02) - math.log(0.99)))]
    torch.testing.assert_close(loss, torch.tensor(expected), rtol=1e-6, atol=1e-7)
    loss.sum().backward()
    assert policy_chosen.grad[0] == 0 and policy_rejected.grad[0] == 0
    # inside the band: d/dx softplus(−β(x − y)) = −β·σ(−β(x − y))
    logit = 0.1 * (math.log(1.02) - math.log(0.99))
    assert policy_chosen.grad[1].item() == pytest.approx(-0.1 / (1 + math.exp(logit)), rel=1e-5)
    assert policy_rejected.grad[1].item() == pytest.approx(0.1 / (1 + math.exp(logit)), rel=1e-5)


def test_d3po_gradient_stays_finite_for_log_ratios_far_out_of_the_band():
    # summed over a real latent's 16k dimensions, a log-ratio of 100 is possible; exp(100) overflows
    policy_chosen = torch.tensor([100.0, 0.05], requires_grad=True)
    loss = d3po_loss(policy_chosen, torch.zeros(2), torch.zeros(2), torch.zeros(2))
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(policy_chosen.grad).all()
    assert policy_chosen.grad[0] == 0 and policy_chosen.grad[1] < 0


def test_simulated_choices_skip_ties_and_unscored_images():
    rewards = torch.tensor([[0.9, 0.1], [0.2, 0.7], [0.5, 0.5], [NAN, 0.3]])
    assert simulated_choices(rewards).tolist() == [1.0, -1.0, 0.0, 0.0]


# --- PRDP's loss by hand --------------------------------------------------------------------------------

def test_prdp_loss_regresses_the_reward_difference_over_beta():
    log_ratios = torch.tensor([[[0.1, 0.2], [0.0, -0.1]]])  # r̂ = 0.3 and −0.1 (sums over steps)
    rewards = torch.tensor([[1.0, 0.0]])
    loss, metrics = prdp_loss(log_ratios, torch.zeros_like(log_ratios), rewards, beta=10.0, clip_range=1.0)
    assert loss.item() == pytest.approx((0.4 - 0.1) ** 2)
    assert metrics["implicit_accuracy"] == 1.0 and metrics["pairs"] == 1 and metrics["clip_fraction"] == 0
    mean, _ = prdp_loss(log_ratios, torch.zeros_like(log_ratios), rewards, beta=10.0, clip_range=1.0, step_reduction="mean")
    assert mean.item() == pytest.approx((0.2 - 0.1) ** 2)


def test_prdp_takes_the_larger_of_the_clipped_and_unclipped_errors():
    old = torch.zeros(1, 2, 2)
    # unclipped is worse: r̂ = (0.3, −0.1), clipped to ±0.05 per step: (0.1, −0.05); target 0.1
    far = torch.tensor([[[0.1, 0.2], [0.0, -0.1]]], requires_grad=True)
    loss, metrics = prdp_loss(far, old, torch.tensor([[1.0, 0.0]]), beta=10.0, clip_range=0.05)
    assert loss.item() == pytest.approx(max((0.4 - 0.1) ** 2, (0.15 - 0.1) ** 2))
    assert metrics["clip_fraction"] == 0.75
    # clipped is worse: the unclipped Δr̂ = 0.05 hits the target 0.05, the clipped one is 0.01
    near = torch.tensor([[[0.05, 0.0], [0.0, 0.0]]], requires_grad=True)
    loss, _ = prdp_loss(near, old, torch.tensor([[0.5, 0.0]]), beta=10.0, clip_range=0.01)
    assert loss.item() == pytest.approx((0.01 - 0.05) ** 2)
    loss.backward()
    assert near.grad[0, 0, 0] == 0  # the clipped step carries no gradient on the clipped branch
    # clipping is around the old log-ratio, not around zero
    shifted, _ = prdp_loss(torch.tensor([[[0.05, 0.0], [0.0, 0.0]]]), torch.tensor([[[0.05, 0.0], [0.0, 0.0]]]),
                           torch.tensor([[0.5, 0.0]]), beta=10.0, clip_range=0.01)
    assert shifted.item() == pytest.approx(0.0, abs=1e-12)


def test_prdp_uses_every_pair_once_and_skips_ties_and_unscored():
    log_ratios = torch.tensor([[[0.3], [0.1], [0.0], [0.2]]])  # B = 4, T = 1
    rewards = torch.tensor([[3.0, 1.0, 1.0, NAN]])               # pairs (0,1), (0,2); (1,2) tie; 3 unscored
    loss, metrics = prdp_loss(log_ratios, torch.zeros_like(log_ratios), rewards, beta=1.0, clip_range=1.0)
    expected = ((0.2 - 2.0) ** 2 + (0.3 - 2.0) ** 2) / 2
    assert loss.item() == pytest.approx(expected) and metrics["pairs"] == 2


# --- configs -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config_class, values, message", [
    (D3POConfig, {"beta": 0.0}, "beta: must be > 0"),
    (PRDPConfig, {"beta": -1.0}, "beta: must be > 0"),
    (D3POConfig, {"eta": 0.0}, "eta: must be > 0"),
    (PRDPConfig, {"eta": 0.0}, "eta: must be > 0"),
    (D3POConfig, {"use_lora": False}, "adapters disabled"),
    (D3POConfig, {"log_prob_reduction": "max"}, "log_prob_reduction"),
    (PRDPConfig, {"samples_per_prompt": 1}, "at least 2"),
    (PRDPConfig, {"step_reduction": "max"}, "step_reduction"),
    (D3POConfig, {"timestep_fraction": 0.0}, "timestep_fraction"),
    (D3POConfig, {"reward": None}, "a reward must label the pairs"),
])
def test_bad_config_values_are_named(config_class, values, message):
    with pytest.raises(InvalidInputError, match=message):
        config_class(**values)


def test_defaults_are_the_papers():
    d3po_defaults, prdp_defaults = D3POConfig(), PRDPConfig()
    assert (d3po_defaults.beta, d3po_defaults.clip_range, d3po_defaults.num_inference_steps, d3po_defaults.eta,
            d3po_defaults.guidance_scale, d3po_defaults.log_prob_reduction) == (0.1, 0.1, 20, 1.0, 5.0, "mean")
    assert (prdp_defaults.beta, prdp_defaults.num_inference_steps, prdp_defaults.guidance_scale,
            prdp_defaults.step_reduction) == (10.0, 50, 5.0, "sum")


# --- end to end on tiny pipelines ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    return {name: tiny_pipelines.save(name, root / name) for name in ("sd", "sdxl_turbo")}


COMMON = dict(num_iterations=2, prompts_per_iteration=2, num_inference_steps=3, guidance_scale=2.0, learning_rate=1e-2,
              rank=2, eval_every=0, report_to="none", reward="jpeg-compressibility", train_batch_size=4)


def d3po_config(model_dir, output_dir, **overrides):
    return D3POConfig(**{**COMMON, "model": model_dir, "output_dir": str(output_dir), **overrides})


def prdp_config(model_dir, output_dir, **overrides):
    values = {**COMMON, "samples_per_prompt": 3, "beta": 1.0, "clip_range": 0.01, "train_batch_size": 2}
    return PRDPConfig(**{**values, "model": model_dir, "output_dir": str(output_dir), **overrides})


@pytest.mark.parametrize("name", ["sd", "sdxl_turbo"])
def test_d3po_trains_an_sd_and_an_sdxl_pipeline_and_logs_accuracy_and_kl(tiny_models, tmp_path, name):
    history = d3po(d3po_config(tiny_models[name], tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [1, 2]
    assert rows[0]["kl_to_reference"] == 0.0, "before any update the policy is the reference"
    assert rows[1]["kl_to_reference"] > 0 and 0 <= rows[1]["implicit_accuracy"] <= 1
    assert rows[0]["pairs"] + rows[0]["ties"] == 2 and history[-1]["steps"] >= 1
    assert (tmp_path / "pytorch_lora_weights.safetensors").is_file()


def test_d3po_first_step_sees_the_reference_exactly(tiny_models, tmp_path):
    """Before any update, the policy's log-prob of every stored step equals the stored reference
    log-prob (the adapter starts at zero), so every step's loss is log 2."""
    from accelerate import Accelerator

    method = D3PO(d3po_config(tiny_models["sd"], tmp_path))
    module = method.build(torch.device("cpu"))
    examples = method.collect(0, torch.Generator().manual_seed(0), Accelerator(cpu=True)).examples
    with torch.no_grad():
        loss, metrics = method.loss(module, examples, torch.Generator())
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5) and abs(metrics["margin"]) < 1e-5


@pytest.mark.parametrize("method_class, make_config, settings, learnt", [
    (D3PO, d3po_config, {}, lambda metrics: metrics["implicit_accuracy"] >= 0.6 and metrics["margin"] > 0),
    # JPEG sizes of tiny random images differ by ~0.01 kB: a small β makes the targets Δr/β reachable
    (PRDP, prdp_config, {"beta": 0.01}, lambda metrics: metrics["implicit_accuracy"] >= 0.75),  # Δr̂ takes Δr's sign
])
def test_training_on_fixed_pairs_learns_their_preferences(tiny_models, tmp_path, method_class, make_config, settings,
                                                          learnt):
    """The gradient points the right way: steps on one collected batch lower its loss and move the
    implicit reward towards the labels (D3PO's band caps how far a ratio can be pushed, so its
    accuracy need not reach 1: a clamped side gets no gradient, as in the official code)."""
    from accelerate import Accelerator

    method = method_class(make_config(tiny_models["sd"], tmp_path, prompts_per_iteration=4, **settings))
    module = method.build(torch.device("cpu"))
    examples = method.collect(0, torch.Generator().manual_seed(0), Accelerator(cpu=True)).examples
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(20):
        loss, metrics = method.loss(module, examples, torch.Generator())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((loss.item(), metrics["implicit_accuracy"]))
    with torch.no_grad():
        final_loss, final = method.loss(module, examples, torch.Generator())
    assert final_loss.item() < history[0][0] and history[0][1] == 0.0 and learnt(final)


def test_the_higher_rewarded_trajectory_of_a_pair_is_the_chosen_one(tiny_models, tmp_path, monkeypatch):
    from accelerate import Accelerator

    from mmalign.sampling.trajectories import Trajectories

    method = D3PO(d3po_config(tiny_models["sd"], tmp_path, prompts_per_iteration=2, timestep_fraction=1 / 3))
    method.build(torch.device("cpu"))
    rows = torch.arange(4.0).view(4, 1, 1, 1, 1).expand(4, 4, 4, 8, 8)  # every latent of row b holds b

    def fake_sample(prompts, generator, starts=None):
        return Trajectories(latents=rows.clone(), timesteps=torch.tensor([999, 666, 333]),
                            prev_timesteps=torch.tensor([666, 333, -1]), log_probs=torch.zeros(4, 3),
                            conditioning={"encoder_hidden_states": torch.arange(4.0).view(4, 1, 1).expand(4, 16, 16)},
                            images=torch.zeros(4, 3, 16, 16), ref_log_probs=torch.arange(4.0).view(4, 1).expand(4, 3),
                            kl=torch.zeros(4))

    monkeypatch.setattr(method, "sample", fake_sample)
    # pair 0 (rows 0, 1): the second is better; pair 1 (rows 2, 3): the first is
    monkeypatch.setattr(method, "reward", lambda images, prompts: type("Out", (), {"reward": torch.tensor([0.1, 0.9, 0.8, 0.2])})())
    examples = method.collect(0, torch.Generator().manual_seed(0), Accelerator(cpu=True)).examples
    chosen_rows = sorted({int(e["chosen_latents"][0, 0, 0, 0]) for e in examples})
    rejected_rows = sorted({int(e["rejected_latents"][0, 0, 0, 0]) for e in examples})
    assert chosen_rows == [1, 2] and rejected_rows == [0, 3]
    for example in examples:  # reference log-probs and the prompt travel with their own trajectory
        assert example["chosen_reference"] == example["chosen_latents"][0, 0, 0, 0]
        assert example["text"]["encoder_hidden_states"][0, 0] == example["chosen_latents"][0, 0, 0, 0]


def test_no_second_unet_is_ever_made_for_the_reference(tiny_models, tmp_path):
    """The reference is the policy's own UNet with its adapters off: after sampling with reference
    log-probs and a training step, exactly one UNet exists, and its parameters are the base's plus
    the adapters."""
    import gc

    from accelerate import Accelerator
    from diffusers import UNet2DConditionModel

    gc.collect()
    before = sum(isinstance(o, UNet2DConditionModel) for o in gc.get_objects())
    method = D3PO(d3po_config(tiny_models["sd"], tmp_path))
    module = method.build(torch.device("cpu"))
    examples = method.collect(0, torch.Generator().manual_seed(0), Accelerator(cpu=True)).examples
    method.loss(module, examples, torch.Generator())[0].backward()
    gc.collect()
    assert sum(isinstance(o, UNet2DConditionModel) for o in gc.get_objects()) - before == 1
    base = UNet2DConditionModel.from_pretrained(tiny_models["sd"], subfolder="unet")
    frozen = sum(p.numel() for name, p in module.named_parameters() if "lora_" not in name)
    assert frozen == sum(p.numel() for p in base.parameters())


def test_prdp_makes_k_passes_over_each_epoch(tiny_models, tmp_path):
    # 2 prompt groups at 2 per step: one step per pass, K = 3 passes
    history = prdp(prdp_config(tiny_models["sd"], tmp_path, gradient_steps_per_iteration=3))
    assert [row["iteration"] for row in history] == [1, 2]
    assert history[0]["kl_to_reference"] == 0.0 and history[1]["kl_to_reference"] > 0
    assert 0 <= history[0]["clip_fraction"] < 1 and [row["steps"] for row in history] == [3, 3]


def test_prdp_trains_an_sdxl_pipeline(tiny_models, tmp_path):
    history = prdp(prdp_config(tiny_models["sdxl_turbo"], tmp_path, num_iterations=1))
    assert math.isfinite(history[0]["loss"])


def test_d3po_from_a_preference_store_and_from_a_jsonl_file(tiny_models, tmp_path):
    from mmalign.prefs import PreferenceStore

    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 16, 16, generator=generator) for _ in range(6)]
    store = PreferenceStore(tmp_path / "prefs.db")
    store.add("a red circle", images[0], images[1], "left", annotator="ann", source="human")
    store.add("a blue square", images[2], images[3], "right", annotator="ann", source="human")
    store.add("a green triangle", images[4], images[5], "tie", annotator="ann", source="human")
    history = d3po(d3po_config(tiny_models["sd"], tmp_path / "from-store", preferences=str(tmp_path / "prefs.db")))
    assert history[0]["pairs"] == 2 and history[-1]["steps"] >= 1

    from PIL import Image

    for index in range(2):
        Image.fromarray((images[index].permute(1, 2, 0) * 255).byte().numpy()).save(tmp_path / f"{index}.png")
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"prompt": "a red circle", "left": "0.png", "right": "1.png",
                                                      "choice": "right"}) + "\n")
    history = d3po(d3po_config(tiny_models["sd"], tmp_path / "from-file", preferences=str(tmp_path / "pairs.jsonl")))
    assert history[0]["pairs"] == 2  # one pair drawn twice: prompts_per_iteration draws with replacement


def test_a_preference_file_with_only_ties_is_refused(tiny_models, tmp_path):
    from mmalign.prefs import PreferenceStore

    store = PreferenceStore(tmp_path / "prefs.db")
    store.add("a red circle", torch.rand(3, 8, 8), torch.rand(3, 8, 8), "tie")
    with pytest.raises(InvalidInputError, match="holds no pair with a preference"):
        D3PO(d3po_config(tiny_models["sd"], tmp_path / "run", preferences=str(tmp_path / "prefs.db")))


@pytest.mark.parametrize("method_class, make_config", [(D3PO, d3po_config), (PRDP, prdp_config)])
def test_a_killed_run_resumes_to_the_uninterrupted_result(tiny_models, tmp_path, method_class, make_config):
    from safetensors.torch import load_file

    finetune(method_class(make_config(tiny_models["sd"], tmp_path / "whole", num_iterations=3)))
    method = method_class(make_config(tiny_models["sd"], tmp_path / "killed", num_iterations=3))
    collect = method.collect

    def collect_then_die(iteration, generator, accelerator):
        if iteration == 2:
            raise KeyboardInterrupt
        return collect(iteration, generator, accelerator)

    method.collect = collect_then_die
    with pytest.raises(KeyboardInterrupt):
        finetune(method)
    history = finetune(method_class(make_config(tiny_models["sd"], tmp_path / "killed", num_iterations=3)), resume=True)
    assert [row["iteration"] for row in history] == [1, 2, 3]
    whole = load_file(tmp_path / "whole" / "pytorch_lora_weights.safetensors")
    resumed = load_file(tmp_path / "killed" / "pytorch_lora_weights.safetensors")
    assert whole.keys() == resumed.keys() and whole
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["d3po", "prdp"])
def test_two_processes_train_one_model(tiny_models, tmp_path, method):
    """Under torchrun with two gloo processes, each samples half the prompts, the examples are dealt
    out, and both end with the same adapter weights."""
    from test_raft import train_on_two_processes

    ranks = train_on_two_processes(tiny_models["sd"], tmp_path, method)
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["lora"]
    for name, value in ranks[0]["lora"].items():
        torch.testing.assert_close(ranks[1]["lora"][name], value, rtol=0, atol=0)
    assert ranks[0]["history"][-1]["kl_to_reference"] > 0
