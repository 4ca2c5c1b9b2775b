"""`mmalign train raft` as a user runs it: a YAML config plus overrides, the one-line errors, and the
LoRA it saves used again by `mmalign generate --lora`."""

import json

import pytest

import tiny_pipelines
from test_cli import mmalign


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return tiny_pipelines.save("sd", tmp_path_factory.mktemp("tiny-sd") / "sd")


def test_train_raft_from_yaml_and_overrides_then_generate_with_the_lora(tiny_sd, tmp_path):
    config = tmp_path / "raft.yaml"
    config.write_text(f"model: {tiny_sd}\nnum_iterations: 5\nprompts_per_iteration: 2\nnum_samples_per_prompt: 2\n"
                      "num_inference_steps: 2\nguidance_scale: 2.0\neval_every: 0\nreport_to: tensorboard\n")
    output = tmp_path / "run"
    result = mmalign("train", "raft", "--config", config, f"output_dir={output}", "num_iterations=1", "rank=2", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["iterations"] == 1 and summary["final"]["kept"] == 2
    assert list((output / "logs").rglob("events.out.tfevents.*")), "the TensorBoard tracker wrote nothing"
    generated = mmalign("generate", "--model", tiny_sd, "--lora", output, "--prompt", "a red circle", "-n", "1",
                        "--num-inference-steps", "2", "--output-dir", tmp_path / "images")
    assert generated.returncode == 0, generated.stderr


@pytest.mark.parametrize("args, message", [
    (["learning_rte=1e-3"], "Did you mean 'learning_rate'"),
    (["num_iterations"], "write overrides as key=value"),
    (["--config", "missing.yaml"], "is not a file"),
    (["prompt_file=empty.txt"], "holds no prompts"),
])
def test_bad_training_input_is_one_line(args, message, tiny_sd, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    result = mmalign("train", "raft", f"model={tiny_sd}", f"output_dir={tmp_path / 'run'}", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_lora_from_another_base_is_refused(tiny_sd, tmp_path):
    other = tiny_pipelines.save("sd3", tmp_path / "sd3")
    mmalign("train", "raft", f"model={other}", f"output_dir={tmp_path / 'run'}", "num_iterations=1", "prompts_per_iteration=2",
            "num_samples_per_prompt=2", "num_inference_steps=1", "eval_every=0", "report_to=none")
    result = mmalign("generate", "--model", tiny_sd, "--lora", tmp_path / "run", "--prompt", "a red circle",
                     "--output-dir", tmp_path / "images")
    assert result.returncode == 2 and "--lora" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("method, extra", [("d3po", []), ("prdp", ["samples_per_prompt=2", "beta=1.0"])])
def test_train_d3po_and_prdp_from_the_command_line(method, extra, tiny_sd, tmp_path):
    result = mmalign("train", method, f"model={tiny_sd}", f"output_dir={tmp_path / 'run'}", "num_iterations=1",
                     "prompts_per_iteration=2", "num_inference_steps=2", "guidance_scale=2.0", "rank=2", "eval_every=0",
                     "report_to=none", "reward=jpeg-compressibility", "train_batch_size=2", *extra, "--json")
    assert result.returncode == 0, result.stderr
    final = json.loads(result.stdout)["final"]
    assert final["kl_to_reference"] == 0.0 and 0 <= final["implicit_accuracy"] <= 1
    assert (tmp_path / "run" / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.parametrize("method, args, message", [
    ("d3po", ["eta=0"], "eta: must be > 0"),
    ("prdp", ["beta=0"], "beta: must be > 0"),
    ("d3po", ["preferences=missing.jsonl"], "missing.jsonl"),
])
def test_bad_d3po_and_prdp_input_is_one_line(method, args, message, tiny_sd, tmp_path):
    result = mmalign("train", method, f"model={tiny_sd}", f"output_dir={tmp_path / 'run'}", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
