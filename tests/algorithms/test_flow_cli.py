"""`mmalign train flow-dpo|flow-rwr`, `mmalign generate` of a video model and `mmalign nrg`, as a
user runs them, on a tiny Wan pipeline, with their one-line errors."""

import json

import pytest

import tiny_pipelines
from test_cli import mmalign

SIZE = ["height=16", "width=16", "num_frames=5"]


@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory):
    return tiny_pipelines.save("wan", tmp_path_factory.mktemp("tiny-wan") / "wan")


@pytest.mark.parametrize("method", ["flow-dpo", "flow-rwr"])
def test_train_flow_methods_then_generate_a_video_with_the_lora(method, tiny_wan, tmp_path):
    result = mmalign("train", method, f"model={tiny_wan}", f"output_dir={tmp_path / 'run'}", "num_iterations=1",
                     "prompts_per_iteration=2", "group_size=2", "num_inference_steps=2", "rank=2", "lora_alpha=4",
                     "eval_every=0", "report_to=none", "train_batch_size=2", *SIZE, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["iterations"] == 1
    out = tmp_path / "videos"
    generated = mmalign("generate", "--model", tiny_wan, "--lora", tmp_path / "run", "--prompt", "a red circle moving left",
                        "-n", "2", "--num-inference-steps", "2", "--height", "16", "--width", "16", "--num-frames", "5",
                        "--output-dir", out, "--json")
    assert generated.returncode == 0, generated.stderr
    report = json.loads(generated.stdout)
    assert [p.rsplit("/", 1)[-1] for p in report["videos"]] == ["000.gif", "001.gif"]
    assert (out / "frames.png").is_file() and (out / "000-frames.png").is_file()


def test_generate_writes_mp4(tiny_wan, tmp_path):
    result = mmalign("generate", "--model", tiny_wan, "--prompt", "a square moving up", "-n", "1", "--num-inference-steps",
                     "1", "--height", "16", "--width", "16", "--num-frames", "5", "--format", "mp4", "--output-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "000.mp4").stat().st_size > 0


def test_nrg_writes_guided_and_unguided_runs_with_heads_and_verdicts(tiny_wan, tmp_path):
    result = mmalign("nrg", "--model", tiny_wan, "--prompt", "a red circle moving left", "--reward", "shapes-video-reward",
                     "--weights", "VQ=1,MQ=1", "--weights", "TA=2", "--num-inference-steps", "2", "--height", "16",
                     "--width", "16", "--num-frames", "5", "--output-dir", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["head_weights"] == {"VQ": 1.0, "MQ": 1.0, "TA": 2.0}
    for run in ("base", "nrg"):
        assert set(report[run]["heads"]) == {"VQ", "MQ", "TA"} and report[run]["oracle"][0] in ("pass", "fail")
    assert (tmp_path / "nrg-000.gif").is_file() and (tmp_path / "base-000-frames.png").is_file()


@pytest.mark.parametrize("command, args, message", [
    ("train", ["flow-dpo", "beta_schedule=cubic"], "beta_schedule: must be one of constant, time"),
    ("train", ["flow-dpo", "reward=shapes-clip", *SIZE], "scores image, not video"),
    ("train", ["flow-rwr", "--prefs", "x.db"], "only D3PO and Flow-DPO"),
    ("nrg", ["--prompt", "a", "--reward", "shapes-video-reward", "--weights", "AQ=1", "--num-inference-steps", "1",
             "--height", "16", "--width", "16", "--num-frames", "5"], "no head 'AQ'"),
    ("nrg", ["--prompt", "a", "--weights", "VQ=1"], "give exactly one"),
    ("nrg", ["--prompt", "a", "--reward", "r", "--weights", "VQ"], "is not HEAD=WEIGHT"),
])
def test_bad_flow_input_is_one_line(command, args, message, tiny_wan, tmp_path):
    model = [f"model={tiny_wan}", f"output_dir={tmp_path / 'run'}"] if command == "train" else ["--model", tiny_wan]
    result = mmalign(command, *(args[:1] + model + args[1:] if command == "train" else model + args), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_generate_a_longer_video_of_the_shipped_model(tmp_path):
    from PIL import Image

    result = mmalign("generate", "--model", "shapes-video", "--prompt", "a red circle moving left", "-n", "1",
                     "--num-inference-steps", "1", "--num-frames", "19", "--output-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "000.gif").n_frames == 19  # the flag wins over the model's own 9


def test_generate_refuses_a_length_the_temporal_patches_do_not_fit(tmp_path):
    model = tiny_pipelines.save("wan_temporal_patches", tmp_path / "wan")
    result = mmalign("generate", "--model", model, "--prompt", "a square moving up", "--num-inference-steps", "1",
                     "--height", "16", "--width", "16", "--num-frames", "7", "--output-dir", tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--num-frames: 7 frames make 4 latent frames" in result.stderr and "Fix: 5, 11 or 17 frames" in result.stderr


@pytest.mark.parametrize("model_name, command, args", [
    ("sd3", "generate", ["--prompt", "a red circle"]),
    ("sd", "generate", ["--prompt", "a red circle"]),  # an SD-class (non-flow) image model
    ("sd3", "nrg", ["--prompt", "a red circle", "--reward", "shapes-clip", "--weights", "reward=1"]),
])
def test_a_frame_count_for_an_image_model_is_refused_on_the_command_line(model_name, command, args, tmp_path):
    model = tiny_pipelines.save(model_name, tmp_path / model_name)
    result = mmalign(command, "--model", model, *args, "--num-inference-steps", "1", "--num-frames", "5",
                     "--output-dir", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--num-frames: this pipeline generates images; leave --num-frames unset" in result.stderr


def test_eval_refuses_a_video_model(tiny_wan, tmp_path):
    result = mmalign("eval", "--model", tiny_wan, "--output-dir", tmp_path)
    assert result.returncode == 2 and "video model" in result.stderr and "Traceback" not in result.stderr
