"""Each training script runs a few real steps on a tiny budget, its loss falls, and it resumes."""

import json

import numpy as np
import pytest
import torch

from mmalign.shapes import train_clip, train_flow, train_object, train_sd, train_turbo, train_video


def falls(losses, window=5):
    return np.mean(losses[-window:]) < np.mean(losses[:window])


@pytest.mark.slow
def test_shapes_clip_recipe_learns_and_saves_an_open_clip_folder(tmp_path):
    import open_clip

    summary = train_clip.train(tmp_path, steps=40, seed=0, resume=False, batch_size=32, train_images=512)
    assert falls(summary["losses"]), summary["losses"]
    config = json.loads((tmp_path / "open_clip_config.json").read_text())
    assert config["model_cfg"]["vision_cfg"]["image_size"] == 32
    model = open_clip.create_model(f"local-dir:{tmp_path}")  # the stock loader, strict
    assert model.encode_image(torch.rand(1, 3, 32, 32)).shape == (1, 64)


def test_shapes_object_recipe_learns_and_saves_a_folder_its_reward_loads(tmp_path):
    from mmalign.rewards import load_reward

    summary = train_object.train(tmp_path, steps=30, seed=0, resume=False, batch_size=32, train_frames=256, width=8)
    assert falls(summary["losses"]), summary["losses"]
    reward = load_reward("shapes-object", weights=str(tmp_path))
    assert reward.net.config == {"width": 8}
    assert reward(torch.rand(2, 3, 32, 32), ["a red circle", "a square"]).mask.all()


def test_shapes_object_examples_ask_about_the_mover_its_morphs_and_absent_colours():
    frames, _, labels = train_object.make_examples(300, seed=0)
    assert frames.shape == (300, 3, 32, 32) and 0 <= frames.min() and frames.max() <= 1
    counts = torch.bincount(labels, minlength=4) / len(labels)
    assert (counts[:3] > 0.1).all() and 0.25 < counts[3] < 0.6, counts  # "none": morphs, gone and absent colours


class Killed(Exception):
    pass


@pytest.mark.slow
def test_a_killed_run_resumes_exactly_where_it_stopped(tmp_path, monkeypatch):
    from mmalign.shapes import training

    monkeypatch.setattr(training, "CHECKPOINT_EVERY", 5)
    tiny = dict(steps=12, seed=0, batch_size=16, train_images=256)
    whole = train_clip.train(tmp_path / "whole", resume=False, **tiny)

    real_save = train_clip.save_checkpoint

    def save_then_die(directory, step, *args, **kwargs):
        real_save(directory, step, *args, **kwargs)
        if step == 10:
            raise Killed

    monkeypatch.setattr(train_clip, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        train_clip.train(tmp_path / "killed", resume=False, **tiny)
    monkeypatch.setattr(train_clip, "save_checkpoint", real_save)
    resumed = train_clip.train(tmp_path / "killed", resume=True, **tiny)
    assert resumed["losses"] == pytest.approx(whole["losses"][10:], rel=1e-5)
    from safetensors.torch import load_file

    a = load_file(tmp_path / "whole" / "open_clip_model.safetensors")
    b = load_file(tmp_path / "killed" / "open_clip_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(Exception, match="--steps: .* belongs to a run of 12 steps"):
        train_clip.train(tmp_path / "killed", resume=True, **{**tiny, "steps": 20})


@pytest.mark.slow
def test_shapes_sd_recipe_learns_resumes_and_saves_a_stable_diffusion_folder(tiny_sd):
    from diffusers import StableDiffusionPipeline

    tmp_path, first = tiny_sd
    tiny = dict(vae_steps=40, train_images=256, batch_size=16)
    assert falls(first["vae_losses"]) and falls(first["losses"]), (first["vae_losses"], first["losses"])
    resumed = train_sd.train(tmp_path, steps=40, seed=0, resume=True, **tiny)
    assert resumed["vae_losses"] == [] and resumed["losses"] == []  # both phases were complete
    with pytest.raises(Exception, match="--steps: .* belongs to a run of 40 steps"):
        train_sd.train(tmp_path, steps=50, seed=0, resume=True, **tiny)
    pipeline = StableDiffusionPipeline.from_pretrained(tmp_path, torch_dtype=torch.float32)
    assert pipeline.unet.dtype == torch.float32 and pipeline.vae.config.scaling_factor == pytest.approx(resumed["latent_scaling"], rel=1e-3)
    images = pipeline("a red circle", num_inference_steps=2, output_type="pt",
                      generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 3, 32, 32)


@pytest.mark.slow
def test_shapes_turbo_recipe_distils_a_one_step_stable_diffusion_folder(tiny_sd, tmp_path):
    from diffusers import StableDiffusionPipeline

    summary = train_turbo.train(tmp_path, steps=30, seed=0, resume=False, teacher=str(tiny_sd[0]), pairs=64,
                                batch_size=16, teacher_steps=4)
    assert falls(summary["losses"]), summary["losses"]
    pipeline = StableDiffusionPipeline.from_pretrained(tmp_path, torch_dtype=torch.float32)
    assert type(pipeline.scheduler).__name__ == "EulerDiscreteScheduler"
    image = pipeline("a red circle", num_inference_steps=1, guidance_scale=0.0, output_type="pt",
                     generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 3, 32, 32)


@pytest.mark.slow
def test_shapes_flow_recipe_learns_and_saves_a_stable_diffusion_3_folder(tiny_sd, tmp_path):
    from diffusers import StableDiffusion3Pipeline

    summary = train_flow.train(tmp_path, steps=30, seed=0, resume=False, base=str(tiny_sd[0]), train_images=256,
                               batch_size=8, max_sequence_length=16)
    assert falls(summary["losses"]), summary["losses"]
    pipeline = StableDiffusion3Pipeline.from_pretrained(tmp_path, torch_dtype=torch.float32, text_encoder_3=None, tokenizer_3=None)
    assert type(pipeline.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    image = pipeline("a red circle", num_inference_steps=2, output_type="pt", max_sequence_length=16,
                     generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 3, 32, 32)


def test_object_weights_cover_each_saturated_pixel_and_its_neighbours_in_space_only():
    grey = torch.zeros(1, 3, 2, 4, 4)  # [N,3,T,H,W] in [-1, 1]
    grey[0, :, 0, 1, 1] = torch.tensor([1.0, -1.0, -1.0])  # one red pixel in the first frame
    expected = torch.ones(1, 1, 2, 4, 4)
    expected[0, 0, 0, 0:3, 0:3] = 11.0
    torch.testing.assert_close(train_sd.object_weights(grey, 10.0), expected)
    torch.testing.assert_close(train_sd.object_weights(grey[:, :, 0], 10.0), expected[:, :, 0])


def test_deepen_adds_blocks_that_leave_the_function_unchanged_until_trained():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8,
                                        in_channels=4, out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32,
                                        num_layers=2, rope_max_seq_len=32)
    for parameter in transformer.parameters():  # weights large enough that any change would show
        torch.nn.init.normal_(parameter, std=0.2)
    deeper = train_video.deepen(transformer, 3)
    latents, context, timestep = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 5, 16), torch.tensor([100.0, 900.0])
    with torch.no_grad():
        before = transformer(latents, timestep=timestep, encoder_hidden_states=context).sample
        after = deeper(latents, timestep=timestep, encoder_hidden_states=context).sample
        assert deeper.config.num_layers == 5 and before.abs().mean() > 0.01
        torch.testing.assert_close(after, before)
        deeper.blocks[-1].ffn.net[-1].bias.fill_(1.0)  # a trained new block does change it
        assert not torch.allclose(deeper(latents, timestep=timestep, encoder_hidden_states=context).sample, before)


@pytest.mark.slow
def test_shapes_video_recipe_learns_resumes_and_saves_a_wan_folder(tmp_path):
    from diffusers import WanPipeline

    tiny = dict(vae_steps=20, vae_object_steps=10, restart_steps=(10,), deeper_layers=1, deeper_steps=10,
                high_noise_steps=10, stable_target_references=4, train_clips=64, batch_size=8, vae_batch_size=4,
                eval_clips=4, ema_decay=0.5)
    first = train_video.train(tmp_path, steps=20, seed=0, resume=False, **tiny)
    assert len(first["vae_losses"]) == 30 and len(first["losses"]) == 50  # every phase of each
    assert falls(first["vae_losses"][:20]) and falls(first["losses"][:20]), (first["vae_losses"], first["losses"])
    resumed = train_video.train(tmp_path, steps=20, seed=0, resume=True, **tiny)
    assert resumed["vae_losses"] == [] and resumed["losses"] == []  # every phase was complete
    pipeline = WanPipeline.from_pretrained(tmp_path, torch_dtype=torch.float32)
    assert pipeline.transformer.config.num_layers == train_video.TRANSFORMER_CONFIG["num_layers"] + 1
    # what ships is the last phase's moving average of the weights, not its last weights
    last = torch.load(tmp_path / train_video.TRANSFORMER_HIGH_NOISE_CHECKPOINT, weights_only=True)
    shipped = pipeline.transformer.state_dict()
    averaged = {k: last["ema"][f"module.transformer.{k}"].half().float() for k in shipped}
    torch.testing.assert_close(shipped, averaged)
    assert any(not torch.equal(shipped[k], last["transformer"][k].half().float()) for k in shipped)
    video = pipeline("a red circle moving left", height=32, width=32, num_frames=9, num_inference_steps=2,
                     output_type="pt", generator=torch.Generator().manual_seed(0)).frames
    assert video.shape == (1, 9, 3, 32, 32)
