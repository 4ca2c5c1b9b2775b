"""The shipped shapes-world models load through their stock classes and behave as documented."""

import json
import subprocess
import sys

import pytest
import torch

from mmalign.models import SHIPPED_DIR, load_pipeline
from mmalign.rewards import load_reward
from mmalign.rewards.clip import CLIPScore
from mmalign.shapes import sample


def test_shapes_clip_loads_with_open_clip_and_prefers_the_true_caption():
    import open_clip

    model = open_clip.create_model(f"local-dir:{SHIPPED_DIR / 'shapes-clip'}")  # the stock loader, strict
    assert model.visual.image_size == (32, 32)
    reward = load_reward("shapes-clip")
    assert isinstance(reward, CLIPScore) and reward.spec.mean is not None
    image, prompt, _ = sample(3, split="heldout", seed=11)
    pixels = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
    true, wrong = reward(pixels.repeat(2, 1, 1, 1), [prompt.text, "four green squares"]).reward
    assert true > wrong


def test_shapes_sd_loads_with_the_stock_pipeline_and_is_deterministic():
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(SHIPPED_DIR / "shapes-sd", torch_dtype=torch.float32)
    pipeline.set_progress_bar_config(disable=True)
    kwargs = dict(num_inference_steps=5, guidance_scale=3.0, output_type="pt")
    first = pipeline("a red circle", generator=torch.Generator().manual_seed(0), **kwargs).images
    again = pipeline("a red circle", generator=torch.Generator().manual_seed(0), **kwargs).images
    other = pipeline("a red circle", generator=torch.Generator().manual_seed(1), **kwargs).images
    assert first.shape == (1, 3, 32, 32)
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, other)


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mmalign", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_generate_writes_a_png_grid(tmp_path):
    result = run_cli("generate", "--model", "shapes-sd", "--prompt", "two blue squares", "-n", "4", "--seed", "0",
                     "--num-inference-steps", "10", "--output-dir", tmp_path, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (tmp_path / "grid.png").is_file() and len(report["images"]) == 4


@pytest.mark.slow
def test_base_shapes_sd_scores_inside_the_stated_band(tmp_path):
    """The README states the base's held-out ShapesEval; on this small fixed sample it stays in a band."""
    result = run_cli("eval", "--model", "shapes-sd", "--split", "heldout", "--per-category", "8", "--seed", "0",
                     "--output-dir", tmp_path, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert 0.2 <= report["shapes_eval"]["overall"] <= 0.8, report["shapes_eval"]
    assert report["proxy"] == "shapes-clip" and report["proxy_mean"] is not None
    assert json.loads((tmp_path / "eval.json").read_text()) == report
