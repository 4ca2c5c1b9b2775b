"""PickScore on a tiny transformers CLIPModel with a CLIPProcessor saved as the hub repos are: the
score is CLIPModel's own logits_per_image, the torch preprocessing agrees with the processor's PIL
path, gradients reach the pixels, and batches do not change scores."""

import pytest
import torch
from PIL import Image

from mmalign.errors import WeightsNotFoundError
from mmalign.rewards import load_reward
from reward_checks import check_gradients_and_batch_invariance
from reward_toys import write_pickscore

PROMPTS = ["a red circle", "two blue squares", "a green triangle above a red circle"]


@pytest.fixture(scope="module")
def pickscore_folders(tmp_path_factory):
    return write_pickscore(tmp_path_factory.mktemp("pickscore"))


@pytest.fixture(scope="module")
def pickscore(pickscore_folders):
    model, processor = pickscore_folders
    return load_reward("pickscore", model=model, processor=processor)


def test_score_is_clip_models_own_scaled_logit(pickscore, pickscore_folders):
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(pickscore_folders[0]).eval()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = pickscore.tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        logits = model(pixel_values=pickscore.preprocess(images), **tokens).logits_per_image
    torch.testing.assert_close(pickscore(images, PROMPTS).reward, logits.diagonal(), atol=1e-4, rtol=0)
    assert pickscore.spec.output_kind == "logit" and pickscore.spec.input_size == 32


def test_torch_preprocessing_agrees_with_the_processors_pil_path(pickscore, pickscore_folders):
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(pickscore_folders[1])
    pixels = (torch.rand(3, 48, 40, generator=torch.Generator().manual_seed(1)) * 255).round() / 255
    image = Image.fromarray((pixels * 255).round().byte().permute(1, 2, 0).numpy())
    expected = processor(images=image, return_tensors="pt").pixel_values
    ours = pickscore.preprocess(pixels.unsqueeze(0))
    assert ours.shape == expected.shape
    assert (ours - expected).abs().mean() < 0.02  # PIL rounds to uint8 between steps; torch does not


def test_gradients_reach_the_pixels_and_batches_do_not_change_scores(pickscore):
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    check_gradients_and_batch_invariance(pickscore, images, [PROMPTS[i % 3] for i in range(8)], atol=1e-4)


def test_a_missing_model_folder_names_the_fix(tmp_path, pickscore_folders):
    with pytest.raises(WeightsNotFoundError, match="pass local folders as model= and processor="):
        load_reward("pickscore", model=str(tmp_path / "nothing"), processor=pickscore_folders[1])
