"""HPSv2/v2.1 on a tiny open_clip architecture: the official checkpoint layout (state dict under
"state_dict", DDP's "module." prefix) loads by key, the letterbox matches an independent torchvision
one, scores are cosines with gradients to the pixels, and bad checkpoints are refused by name."""

import warnings

import open_clip
import pytest
import torch
import torchvision.transforms.functional as TF

from mmalign.errors import CheckpointMismatchError, WeightsNotFoundError
from mmalign.rewards import load_reward
from mmalign.rewards.hps import HPSv2Score
from mmalign.rewards.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, resize_and_crop
from reward_checks import check_gradients_and_batch_invariance
from reward_toys import write_hps_checkpoint

PROMPTS = ["a red circle", "two blue squares", "a green triangle above a red circle"]


@pytest.fixture(scope="module")
def official_checkpoint(tiny_clip_dir, tmp_path_factory):
    return write_hps_checkpoint(tiny_clip_dir, tmp_path_factory.mktemp("hps") / "HPS_v2_compressed.pt")


@pytest.fixture(scope="module")
def hps(official_checkpoint, tiny_clip_dir):
    return load_reward("hpsv2.1", checkpoint=str(official_checkpoint[0]), model_name=f"local-dir:{tiny_clip_dir}")


def reference_letterbox(image: torch.Tensor, size: int) -> torch.Tensor:
    """HPSv2's ResizeMaxSize, written with torchvision: longest side to size, pad w//2 left, h//2 top."""
    height, width = image.shape[-2:]
    scale = size / max(height, width)
    new = [round(height * scale), round(width * scale)]
    image = TF.resize(image, new, interpolation=TF.InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
    pad_h, pad_w = size - new[0], size - new[1]
    return TF.pad(image, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)


@pytest.mark.parametrize("shape", [(40, 64), (64, 40), (32, 32), (50, 51)])
def test_letterbox_matches_hpsv2s_resize_max_size(shape):
    images = torch.rand(2, 3, *shape, generator=torch.Generator().manual_seed(0))
    ours = resize_and_crop(images, 32, "letterbox")
    expected = torch.stack([reference_letterbox(image, 32) for image in images])
    assert ours.shape == (2, 3, 32, 32)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_score_is_the_cosine_of_the_checkpoint_model_on_letterboxed_pixels(hps, official_checkpoint, tiny_clip_dir):
    _, model = official_checkpoint
    images = torch.rand(3, 3, 40, 64, generator=torch.Generator().manual_seed(1))
    mean, std = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1), torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1)
    pixels = torch.stack([(reference_letterbox(image, 32) - mean) / std for image in images])
    with torch.no_grad():
        image = model.encode_image(pixels)
        text = model.encode_text(open_clip.get_tokenizer(f"local-dir:{tiny_clip_dir}")(PROMPTS))
    torch.testing.assert_close(hps(images, PROMPTS).reward, torch.nn.functional.cosine_similarity(image, text),
                               atol=1e-5, rtol=0)
    assert hps.name == "hpsv2.1" and hps.spec.output_kind == "cosine" and "letterbox" in hps.spec.resize_mode


def test_gradients_reach_the_pixels_and_batches_do_not_change_scores(hps):
    images = torch.rand(8, 3, 48, 32, generator=torch.Generator().manual_seed(2))
    check_gradients_and_batch_invariance(hps, images, [PROMPTS[i % 3] for i in range(8)])


def test_only_the_crop_warns_about_non_square_images(hps, clip_reward_of):
    images = torch.rand(1, 3, 40, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hps(images, PROMPTS[0])  # the letterbox sees the whole image: no warning
    with pytest.warns(UserWarning, match="centre-crop reward"):
        clip_reward_of(images, PROMPTS[0])


@pytest.fixture
def clip_reward_of(tiny_clip_dir):
    return load_reward(f"local-dir:{tiny_clip_dir}")


def test_a_checkpoint_that_does_not_fit_lists_its_keys(official_checkpoint, tiny_clip_dir, tmp_path):
    state = torch.load(official_checkpoint[0], weights_only=True)["state_dict"]
    state.pop("module.logit_scale")
    state["module.visual.extra_head.weight"] = torch.zeros(2)
    torch.save({"state_dict": state}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError) as raised:
        HPSv2Score.from_checkpoint(str(tmp_path / "bad.pt"), f"local-dir:{tiny_clip_dir}")
    assert "1 missing key(s): logit_scale" in str(raised.value)
    assert "1 unexpected key(s): visual.extra_head.weight" in str(raised.value)


def test_a_pickled_model_is_refused_never_unpickled(official_checkpoint, tiny_clip_dir, tmp_path):
    torch.save(official_checkpoint[1], tmp_path / "whole-model.pt")  # a module object, not weights
    with pytest.raises(WeightsNotFoundError, match="weights-only"):
        HPSv2Score.from_checkpoint(str(tmp_path / "whole-model.pt"), f"local-dir:{tiny_clip_dir}")


def test_without_a_checkpoint_the_card_names_the_hub_file(tiny_clip_dir):
    with pytest.raises(WeightsNotFoundError, match="HPS_v2_compressed.pt from hf-hub:xswu/HPSv2"):
        load_reward("hpsv2", model_name=f"local-dir:{tiny_clip_dir}")
