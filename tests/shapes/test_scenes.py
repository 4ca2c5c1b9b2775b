import numpy as np
import torch

from mmalign.shapes import HELD_OUT_PAIRS, ShapesDataset, parse_prompt, sample, satisfies
from mmalign.shapes.grammar import CATEGORIES, prompts_for
from mmalign.shapes.scenes import scene_for


def test_renders_are_deterministic_per_index_and_seed():
    first, prompt, _ = sample(7, seed=3)
    again, prompt_again, _ = sample(7, seed=3)
    other, _, _ = sample(8, seed=3)
    assert np.array_equal(first, again) and prompt == prompt_again
    assert not np.array_equal(first, other)
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    assert sample(7, seed=3, image_size=64)[0].shape == (64, 64, 3)


def test_every_scene_satisfies_its_prompt():
    rng = np.random.default_rng(0)
    for category in CATEGORIES:
        for prompt in prompts_for("heldout", category)[:20]:
            scene = scene_for(prompt, rng)
            assert satisfies(scene.objects, prompt), prompt.text


def test_training_scenes_never_show_a_held_out_pair():
    for index in range(300):
        _, _, scene = sample(index, split="train")
        assert not {(o.colour, o.shape) for o in scene.objects} & HELD_OUT_PAIRS


def test_dataset_items_and_errors():
    dataset = ShapesDataset("heldout", length=4, seed=1)
    item = dataset[0]
    assert item["pixel_values"].shape == (3, 32, 32) and 0 <= item["pixel_values"].min() <= item["pixel_values"].max() <= 1
    assert parse_prompt(item["caption"]).category == item["category"]
    images, captions = dataset.render_all()
    assert images.dtype == torch.uint8 and len(captions) == 4
    torch.testing.assert_close(images[0].float() / 255, item["pixel_values"])
    import pytest

    with pytest.raises(Exception, match="image_size"):
        ShapesDataset(image_size=48)
