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
    with pytest.raises(InvalidInputError, match="reno, best_of_n"):
        mmalign.pipelines_path("dpo")
