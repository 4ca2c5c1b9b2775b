import open_clip
import pytest
import torch
from PIL import Image

from mmalign.errors import InvalidInputError, WeightsNotFoundError
from mmalign.rewards import load_reward
from mmalign.rewards.clip import CLIPScore, OpenCLIPEncoder, parse_variant
from mmalign.rewards.preprocess import resize_and_crop, resized_shape
from toys import TINY_CLIP_CFG, write_tiny_clip


@pytest.fixture(scope="module")
def clip_reward(tiny_clip_dir):
    return load_reward(f"local-dir:{tiny_clip_dir}")


def test_cosine_matches_an_independent_open_clip_forward(clip_reward, tiny_clip_dir):
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompts = ["a red circle", "two blue squares", "a green triangle above a red circle"]
    model = open_clip.create_model(f"local-dir:{tiny_clip_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_clip_dir}")
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    with torch.no_grad():
        image = model.encode_image((images - mean) / std)
        text = model.encode_text(tokenizer(prompts))
    expected = torch.nn.functional.cosine_similarity(image, text)
    torch.testing.assert_close(clip_reward(images, prompts).reward, expected, atol=1e-5, rtol=0)
    assert clip_reward.spec.output_kind == "cosine" and clip_reward.spec.input_size == 32


def test_batch_of_one_equals_batch_of_n(clip_reward):
    images = torch.rand(5, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    prompts = [f"prompt {i}" for i in range(5)]
    batched = clip_reward(images, prompts).reward
    single = torch.cat([clip_reward(images[i : i + 1], prompts[i]).reward for i in range(5)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_gradients_reach_the_pixels(clip_reward):
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    clip_reward(images, "a red circle").reward.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip_reward.parameters())


@pytest.mark.parametrize("shape", [(64, 80), (50, 32), (32, 32)])
def test_torch_preprocessing_agrees_with_open_clip_pil_transform(tmp_path, shape):
    directory = write_tiny_clip(tmp_path / "clip", image_size=32)
    encoder = OpenCLIPEncoder.from_pretrained(f"local-dir:{directory}")
    _, _, pil_transform = open_clip.create_model_and_transforms(f"local-dir:{directory}")
    low = torch.rand(4, 3, shape[0] // 4, shape[1] // 4, generator=torch.Generator().manual_seed(2))
    pixels = (torch.nn.functional.interpolate(low, size=shape, mode="bilinear") * 255).round().to(torch.uint8)
    ours = encoder.preprocess(pixels.float() / 255)
    theirs = torch.stack([pil_transform(Image.fromarray(p.permute(1, 2, 0).numpy())) for p in pixels])
    assert ours.shape == theirs.shape
    # within two uint8 steps (1/255/std ≈ 0.015 each) everywhere, well under one on average
    assert (ours - theirs).abs().max() < 0.035
    assert (ours - theirs).abs().mean() < 0.008


def test_resize_arithmetic_matches_torchvision():
    from torchvision.transforms import functional as TF

    for height, width in [(256, 320), (333, 100), (224, 224)]:
        expected = TF.resize(torch.zeros(1, height, width), 224, antialias=True).shape[-2:]
        assert resized_shape(height, width, 224) == tuple(expected)
    with pytest.raises(InvalidInputError, match="resize_mode"):
        resize_and_crop(torch.zeros(1, 3, 8, 8), 4, resize_mode="longest")


def test_family_variant_names(monkeypatch):
    assert parse_variant("ViT-H-14/laion2b_s32b_b79k") == ("ViT-H-14", "laion2b_s32b_b79k")
    assert parse_variant("hf-hub:laion/CLIP-ViT-g-14") == ("hf-hub:laion/CLIP-ViT-g-14", None)
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "mmalign-tiny-test", TINY_CLIP_CFG)
    reward = load_reward("clip:mmalign-tiny-test")  # architecture only: random weights, no download
    assert isinstance(reward, CLIPScore) and reward.name == "clip:mmalign-tiny-test"
    assert reward(torch.rand(1, 3, 32, 32), "a red circle").reward.shape == (1,)


def test_a_failed_download_is_one_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(WeightsNotFoundError, match="could not load open_clip model 'ViT-L-14' with pretrained='openai'"):
        load_reward("clip:ViT-L-14/openai")


def test_rewards_on_one_backbone_share_it_while_it_lives(tiny_clip_dir, tmp_path):
    from mmalign.rewards.aesthetic import AestheticMLP, AestheticScore

    torch.save(AestheticMLP(16).state_dict(), tmp_path / "head.pth")
    clip = load_reward(f"local-dir:{tiny_clip_dir}")
    aesthetic = AestheticScore.from_pretrained(tmp_path / "head.pth", clip=f"local-dir:{tiny_clip_dir}")
    assert aesthetic.encoder is clip.encoder  # one copy of the weights in memory
    other_precision = load_reward(f"local-dir:{tiny_clip_dir}", precision="bf16")
    assert other_precision.encoder is not clip.encoder
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(clip(images, ["a", "b"]).reward, CLIPScore(clip.encoder)(images, ["a", "b"]).reward)
