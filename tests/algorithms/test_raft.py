"""RAFT: the selection rule by hand, the denoising targets against diffusers' own formulas, and the
shared fine-tune loop end to end on tiny SD and SD3 pipelines (checkpoints, resume, LoRA)."""

import json
import math

import pytest
import torch

import tiny_pipelines
from mmalign.algorithms.denoising import noise_coefficients, prediction_target
from mmalign.algorithms.raft import RAFTConfig, raft, raft_method, read_prompt_file, select_samples
from mmalign.config import load_config
from mmalign.errors import InvalidInputError

NAN = float("nan")


# --- selection ------------------------------------------------------------------------------------

def test_select_keeps_each_prompts_best_and_skips_unscored_groups():
    rewards = torch.tensor([[1.0, 3.0, 2.0], [NAN, NAN, NAN], [5.0, NAN, 4.0]])
    keep, skipped = select_samples(rewards)
    assert keep.nonzero().tolist() == [[0, 1], [2, 0]]
    assert skipped == 1


def test_select_keeps_several_per_prompt_but_never_an_unscored_one():
    rewards = torch.tensor([[1.0, 3.0, 2.0], [NAN, 7.0, NAN]])
    keep, _ = select_samples(rewards, keep_per_prompt=2)
    assert keep.nonzero().tolist() == [[0, 1], [0, 2], [1, 1]]


def test_select_breaks_ties_by_lower_index():
    keep, _ = select_samples(torch.tensor([[2.0, 2.0, 1.0]]))
    assert keep.nonzero().tolist() == [[0, 0]]


def test_global_top_fraction_ranks_winners_across_prompts():
    rewards = torch.tensor([[1.0, 3.0], [5.0, 4.0], [0.0, -1.0], [2.0, 9.0]])  # winners 3, 5, 0, 9
    keep, _ = select_samples(rewards, global_top_fraction=0.5)
    assert keep.nonzero().tolist() == [[1, 0], [3, 1]]
    # with other processes' winners (10, 8) in the pool, only 9 of ours is in the top half of six
    keep, _ = select_samples(rewards, global_top_fraction=0.5, all_winners=torch.tensor([3.0, 5.0, 0.0, 9.0, 10.0, 8.0]))
    assert keep.nonzero().tolist() == [[3, 1]]


# --- config ---------------------------------------------------------------------------------------

def test_one_sample_per_prompt_warns_that_nothing_is_ranked():
    with pytest.warns(UserWarning, match="nothing to rank"):
        RAFTConfig(num_samples_per_prompt=1)


@pytest.mark.parametrize("values, message", [
    ({"keep_per_prompt": 6}, "keep_per_prompt"),
    ({"global_top_fraction": 1.5}, "global_top_fraction"),
    ({"mode": "replay"}, "mode"),
    ({"learning_rate": 0.0}, "learning_rate"),
])
def test_bad_config_values_are_named(values, message):
    with pytest.raises(InvalidInputError, match=message):
        RAFTConfig(**values)


def test_config_from_yaml_and_overrides(tmp_path):
    path = tmp_path / "raft.yaml"
    path.write_text("learning_rate: 1e-3\nnum_iterations: 3\nuse_lora: true\n")
    config = load_config(RAFTConfig, path, ["num_iterations=5", "use_lora=false", "global_top_fraction=0.5"])
    assert (config.learning_rate, config.num_iterations, config.use_lora, config.global_top_fraction) == (1e-3, 5, False, 0.5)


def test_unknown_config_key_suggests_the_closest():
    with pytest.raises(InvalidInputError, match="Did you mean 'learning_rate'"):
        load_config(RAFTConfig, overrides=["learning_rte=1e-3"])
    with pytest.raises(InvalidInputError, match="num_iterations must be int"):
        load_config(RAFTConfig, overrides=["num_iterations=many"])


def test_empty_prompt_file_is_refused(tmp_path):
    (tmp_path / "prompts.txt").write_text("\n  \n")
    with pytest.raises(InvalidInputError, match="holds no prompts"):
        read_prompt_file(tmp_path / "prompts.txt")


# --- denoising targets against diffusers' own implementations ------------------------------------------

def test_ddpm_noising_and_v_target_match_diffusers():
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True)
    x0, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    timesteps = torch.tensor([0, 500, 999])
    alpha, sigma = noise_coefficients(scheduler, timesteps)
    torch.testing.assert_close(alpha * x0 + sigma * noise, scheduler.add_noise(x0, noise, timesteps))
    torch.testing.assert_close(prediction_target(scheduler, x0, noise, alpha, sigma), scheduler.get_velocity(x0, noise, timesteps))


def test_flow_noising_and_velocity_target_match_diffusers():
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler()
    x0, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    timesteps = scheduler.timesteps[[100, 700]]
    alpha, sigma = noise_coefficients(scheduler, timesteps)
    expected = torch.cat([scheduler.scale_noise(x0[i : i + 1], timesteps[i : i + 1], noise[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(alpha * x0 + sigma * noise, expected)
    torch.testing.assert_close(prediction_target(scheduler, x0, noise, alpha, sigma), noise - x0)


# --- the loop on tiny pipelines -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    return {name: tiny_pipelines.save(name, root / name) for name in ("sd", "sd3")}


def tiny_config(model_dir, output_dir, name="sd", **overrides):
    steps = tiny_pipelines.CALL_KWARGS[name]
    values = dict(model=model_dir, output_dir=str(output_dir), num_iterations=2, prompts_per_iteration=4,
                  num_samples_per_prompt=3, train_batch_size=2, num_inference_steps=steps["num_inference_steps"],
                  guidance_scale=steps["guidance_scale"], learning_rate=1e-2, rank=2, eval_every=0, report_to="none")
    return RAFTConfig(**{**values, **overrides})


def lora_weights(directory):
    from safetensors.torch import load_file

    return load_file(directory / "pytorch_lora_weights.safetensors")


def test_loss_decreases_on_a_fixed_batch(tiny_models, tmp_path):
    from accelerate import Accelerator

    method = raft_method(tiny_config(tiny_models["sd"], tmp_path))
    module = method.build(torch.device("cpu"))
    examples = method.collect(0, torch.Generator().manual_seed(0), Accelerator(cpu=True)).examples
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(30):
        loss = method.loss(module, examples, torch.Generator().manual_seed(1))  # same timesteps and noise each step
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0] and losses[-1] < min(losses[:5])


@pytest.mark.parametrize("name", ["sd", "sd3"])
def test_raft_writes_log_curves_checkpoints_and_a_stock_loadable_lora(tiny_models, tmp_path, name):
    from diffusers import DiffusionPipeline

    from mmalign.models import absent_components

    config = tiny_config(tiny_models[name], tmp_path, name, eval_every=2, num_eval_prompts=6)
    history = raft(config)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows == json.loads(json.dumps(history)) and [r["iteration"] for r in rows] == [1, 2]
    assert rows[0]["kept"] == 4 and rows[0]["reward_kept"] >= rows[0]["reward_mean"]
    assert "shapes_eval" in rows[1] and "shapes_eval" not in rows[0]
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["iteration-000001", "iteration-000002"]

    # the LoRA loads into a stock pipeline and changes its output; it is not an empty adapter
    path = tiny_models[name]
    stock = DiffusionPipeline.from_pretrained(path, **absent_components(path))
    stock.set_progress_bar_config(disable=True)
    call = {**tiny_pipelines.CALL_KWARGS[name], "output_type": "pt"}
    base = stock("a red circle", generator=torch.Generator().manual_seed(0), **call).images
    stock.load_lora_weights(str(tmp_path))
    tuned = stock("a red circle", generator=torch.Generator().manual_seed(0), **call).images
    assert (tuned - base).abs().max() > 1e-4
    stock.disable_lora()
    torch.testing.assert_close(stock("a red circle", generator=torch.Generator().manual_seed(0), **call).images, base)


def test_a_killed_run_resumes_to_the_uninterrupted_result(tiny_models, tmp_path):
    from mmalign.algorithms.finetune import finetune

    uninterrupted = tiny_config(tiny_models["sd"], tmp_path / "whole", num_iterations=3)
    raft(uninterrupted)

    killed = tiny_config(tiny_models["sd"], tmp_path / "killed", num_iterations=3)
    method = raft_method(killed)
    collect = method.collect

    def collect_then_die(iteration, generator, accelerator):
        if iteration == 2:
            raise KeyboardInterrupt  # killed in the middle of the third iteration
        return collect(iteration, generator, accelerator)

    method.collect = collect_then_die
    with pytest.raises(KeyboardInterrupt):
        finetune(method)
    assert not (tmp_path / "killed" / "pytorch_lora_weights.safetensors").exists()
    history = raft(killed, resume=True)
    assert [row["iteration"] for row in history] == [1, 2, 3]
    whole, resumed = lora_weights(tmp_path / "whole"), lora_weights(tmp_path / "killed")
    assert whole.keys() == resumed.keys()
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=0, atol=0)


def test_resume_warns_about_changed_keys_and_refuses_another_model(tiny_models, tmp_path):
    raft(tiny_config(tiny_models["sd"], tmp_path, num_iterations=1))
    with pytest.warns(UserWarning, match="learning_rate"):
        raft(tiny_config(tiny_models["sd"], tmp_path, num_iterations=1, learning_rate=5e-3), resume=True)
    with pytest.raises(InvalidInputError, match="not a raft run of"):
        raft(tiny_config(tiny_models["sd3"], tmp_path, "sd3", num_iterations=2), resume=True)


def test_a_reward_of_another_modality_is_refused(tiny_models, tmp_path):
    with pytest.raises(InvalidInputError, match="not image"):
        raft_method(tiny_config(tiny_models["sd"], tmp_path, reward="shapes-arithmetic-verifier"))


def test_groups_with_no_scored_sample_are_skipped_and_counted(tiny_models, tmp_path, monkeypatch):
    method = raft_method(tiny_config(tiny_models["sd"], tmp_path))
    method.build(torch.device("cpu"))
    monkeypatch.setattr(method, "reward", lambda images, prompts: type("Out", (), {"reward": torch.full((len(prompts),), NAN)})())
    from accelerate import Accelerator

    collected = method.collect(0, torch.Generator().manual_seed(0), Accelerator(cpu=True))
    assert collected.examples == [] and collected.metrics["skipped_groups"] == 4 and math.isnan(collected.metrics["reward_mean"])


def train_on_two_processes(model_dir, output_dir, method: str = "raft") -> list[dict]:
    """Run ``distributed_raft.py`` for ``method`` under ``torchrun --nproc_per_node 2``; each rank's result."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("distributed_raft.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(script), model_dir, str(output_dir), method]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(Path(output_dir) / f"rank{i}.pt", weights_only=True) for i in range(2)]


@pytest.mark.slow
def test_two_processes_train_one_model(tiny_models, tmp_path):
    """Real data parallelism on the CPU: two processes in one gloo group, each sampling its half of
    the prompts, end with the same weights (their gradients were averaged)."""
    ranks = train_on_two_processes(tiny_models["sd"], tmp_path)
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["lora"].keys() == ranks[1]["lora"].keys() and ranks[0]["lora"]
    for name, value in ranks[0]["lora"].items():
        torch.testing.assert_close(ranks[1]["lora"][name], value, rtol=0, atol=0)
    assert ranks[0]["history"][0]["steps"] >= 1


def test_a_fresh_run_never_overwrites_an_earlier_runs_checkpoints(tiny_models, tmp_path):
    raft(tiny_config(tiny_models["sd"], tmp_path, num_iterations=1))
    with pytest.raises(InvalidInputError, match="pass --resume"):
        raft(tiny_config(tiny_models["sd"], tmp_path, num_iterations=1))
    assert (tmp_path / "checkpoints" / "iteration-000001").is_dir()


def test_own_prompts_are_evaluated_by_the_proxy_alone(tiny_models, tmp_path):
    (tmp_path / "prompts.txt").write_text("a photo of a cat\nein Hund im Schnee 🐕\n")
    history = raft(tiny_config(tiny_models["sd"], tmp_path / "run", num_iterations=1, eval_every=1, num_eval_prompts=2,
                               prompt_file=str(tmp_path / "prompts.txt"), reward="jpeg-compressibility"))
    assert "eval_proxy" in history[0] and "shapes_eval" not in history[0]


def test_offline_mode_trains_every_iteration_on_one_pool_from_the_base(tiny_models, tmp_path):
    history = raft(tiny_config(tiny_models["sd"], tmp_path, num_iterations=3, mode="offline"))
    assert len({row["reward_mean"] for row in history}) == 1 and len({row["reward_kept"] for row in history}) == 1
    assert (tmp_path / "offline_pool.pt.0").is_file()
    online = raft(tiny_config(tiny_models["sd"], tmp_path / "online", num_iterations=3))
    assert len({row["reward_mean"] for row in online}) > 1  # a new sample of the updated model each time
