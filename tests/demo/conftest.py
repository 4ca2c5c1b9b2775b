"""Fixtures of the demo's tests: the shipped shapes-turbo behind a session, LoRAs that fit it and
one from another base, and the Gradio app served on the loopback."""

from __future__ import annotations

import random

import pytest
import tiny_pipelines
import torch


def write_lora(pipeline, directory, seed: int = 0) -> str:
    """A rank-4 LoRA on ``pipeline``'s UNet with random (not zero) up-projections, so it visibly
    changes the images, saved as a fine-tune saves it; the pipeline itself is left without it."""
    from mmalign.algorithms.lora import add_lora, save_diffusers_lora

    unet = pipeline.unet
    add_lora(unet, rank=4)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    save_diffusers_lora(pipeline, unet, directory)
    unet.delete_adapters(list(unet.peft_config))
    return str(directory)


@pytest.fixture(scope="session")
def turbo_lora(tmp_path_factory):
    from mmalign.models import load_pipeline

    return write_lora(load_pipeline("shapes-turbo"), tmp_path_factory.mktemp("turbo-lora"))


@pytest.fixture(scope="session")
def foreign_lora(tmp_path_factory):
    """A LoRA of another base: the tiny SD pipeline, whose UNet has other widths."""
    return write_lora(tiny_pipelines.build("sd"), tmp_path_factory.mktemp("foreign-lora"))


@pytest.fixture
def session(tmp_path):
    from mmalign.demo import DemoSession

    demo = DemoSession("shapes-turbo", output_dir=tmp_path / "demo", rng=random.Random(0))
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``(session, url)``: the app on 127.0.0.1, in the background, closed after the module."""
    from mmalign.demo import DemoSession, app_module

    demo = DemoSession("shapes-turbo", output_dir=tmp_path_factory.mktemp("served"))
    app, url = app_module().launch(demo, block=False)
    yield demo, url
    app.close()
    demo.close()
