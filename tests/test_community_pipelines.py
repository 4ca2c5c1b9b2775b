"""The files in pipelines/ load as diffusers community pipelines, and as mmalign classes."""

import pytest
import torch
from diffusers import DiffusionPipeline

import mmalign
import tiny_pipelines
from mmalign.errors import InvalidInputError
from toys import MeanPixelReward


@pytest.fixture(scope="module")
def saved_sd_turbo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sd-turbo")
    tiny_pipelines.build("sd_turbo").save_pretrained(folder)
    return folder


def test_reno_file_loads_through_custom_pipeline_and_keeps_the_base_components(saved_sd_turbo, tmp_path):
    pipeline = DiffusionPipeline.from_pretrained(saved_sd_turbo, custom_pipeline=mmalign.pipelines_path("reno"),
                                                 trust_remote_code=True, torch_dtype=torch.float32)
    assert type(pipeline).__name__ == "ReNOPipeline"
    pipeline.set_progress_bar_config(disable=True)
    output = pipeline(["a red circle"], rewards=[MeanPixelReward()], iterations=3, output_type="pt",
                      generator=torch.Generator().manual_seed(0))
    assert output.images.shape == (1, 3, 16, 16) and len(output.history) == 3
    assert output.rewards["mean*1+0"][0] >= output.base_rewards["mean*1+0"][0]
    pipeline.save_pretrained(tmp_path)  # rewards are call arguments: nothing but the base's components
    saved = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert saved == sorted(p.name for p in saved_sd_turbo.iterdir() if p.is_dir())


def test_best_of_n_file_loads_through_custom_pipeline(saved_sd_turbo):
    pipeline = DiffusionPipeline.from_pretrained(saved_sd_turbo, custom_pipeline=mmalign.pipelines_path("best_of_n"),
                                                 trust_remote_code=True, torch_dtype=torch.float32)
    assert type(pipeline).__name__ == "BestOfNPipeline"
    pipeline.set_progress_bar_config(disable=True)
    output = pipeline("a red circle", rewards="jpeg-compressibility", num_candidates=3, output_type="np")
    assert output.images.shape == (1, 16, 16, 3) and output.scores.shape == (1, 3)


@pytest.mark.parametrize("family", ["sd_turbo", "flux_schnell"])
def test_from_pipe_shares_the_modules_without_casting_them(family):
    base = tiny_pipelines.build(family).to(torch.float16)
    reno_pipeline = mmalign.ReNOPipeline.from_pipe(base, torch_dtype=torch.float16)
    assert reno_pipeline.vae is base.vae and reno_pipeline.vae.dtype == torch.float16
    best = mmalign.BestOfNPipeline.from_pipe(base, torch_dtype=torch.float16)
    assert best.text_encoder is base.text_encoder


def test_an_unknown_pipeline_name_lists_the_shipped_ones():
    with pytest.raises(InvalidInputError, match="reno, best_of_n, flow_nrg"):
        mmalign.pipelines_path("dpo")


def test_flow_nrg_file_loads_on_a_video_model_and_matches_the_stock_pipeline_unguided(tmp_path):
    tiny_pipelines.build("wan").save_pretrained(tmp_path)
    pipeline = DiffusionPipeline.from_pretrained(tmp_path, custom_pipeline=mmalign.pipelines_path("flow_nrg"),
                                                 trust_remote_code=True, torch_dtype=torch.float32)
    assert type(pipeline).__name__ == "FlowNRGPipeline"
    pipeline.set_progress_bar_config(disable=True)
    size = dict(height=16, width=16, num_frames=5, max_sequence_length=tiny_pipelines.TOKENS, num_inference_steps=2)
    unguided = pipeline("a red circle moving left", reward="shapes-video-reward", head_weights={"TA": 0.0},
                        generator=torch.Generator().manual_seed(0), output_type="pt", **size)
    stock = DiffusionPipeline.from_pretrained(tmp_path, torch_dtype=torch.float32)
    stock.set_progress_bar_config(disable=True)
    expected = stock("a red circle moving left", generator=torch.Generator().manual_seed(0), output_type="pt",
                     guidance_scale=5.0, **size).frames
    torch.testing.assert_close(unguided.frames, expected, atol=1e-4, rtol=1e-4)
    guided = pipeline("a red circle moving left", reward="shapes-video-reward", head_weights={"TA": 100.0},
                      generator=torch.Generator().manual_seed(0), output_type="np", **size)
    assert guided.frames.shape == (1, 5, 16, 16, 3) and guided.head_weights == {"TA": 100.0}
    assert mmalign.FlowNRGPipeline.from_pipe(stock).vae is stock.vae
