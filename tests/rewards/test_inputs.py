import pytest
import torch
from PIL import Image

from mmalign.errors import InvalidInputError, NotDifferentiableError
from mmalign.rewards import RewardOutput, load_reward

from toys import MeanPixelReward, constant_images


@pytest.fixture
def reward():
    return MeanPixelReward()


@pytest.mark.parametrize(
    "samples, fix",
    [
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "samples.float() / 255"),
        (torch.full((2, 3, 8, 8), 200.0), "samples / 255"),
        (torch.full((2, 3, 8, 8), -0.7), "(samples + 1) / 2"),
        (torch.zeros(3, 8, 8), "samples.unsqueeze(0)"),
        (torch.zeros(2, 8, 8, 3), "permute(0, 3, 1, 2)"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.int64), "float tensor"),
    ],
)
def test_bad_pixel_tensors_name_the_argument_and_the_fix(reward, samples, fix):
    with pytest.raises(InvalidInputError) as error:
        reward(samples)
    assert str(error.value).startswith("samples:")
    assert fix in str(error.value)


def test_a_vae_overshoot_within_tolerance_is_accepted(reward):
    images = torch.full((1, 3, 4, 4), 0.5)
    images[0, 0, 0, 0] = 1.0005
    assert torch.isfinite(reward(images).reward).all()


def test_prompt_count_must_match_the_batch():
    needs_prompt = MeanPixelReward(needs_prompt=True)
    with pytest.raises(InvalidInputError, match="prompts: got 3 prompts for 2 samples"):
        needs_prompt(constant_images(0.1, 0.2), ["a", "b", "c"])
    with pytest.raises(InvalidInputError, match="prompts: this reward scores samples against their prompt"):
        needs_prompt(constant_images(0.1, 0.2))
    # one string stands for the whole batch
    assert needs_prompt(constant_images(0.1, 0.2), "a red circle").reward.shape == (2,)


def test_pil_images_and_paths_equal_the_tensor(reward, tmp_path):
    pixels = (torch.rand(3, 6, 5) * 255).round().to(torch.uint8)
    image = Image.fromarray(pixels.permute(1, 2, 0).numpy())
    image.save(tmp_path / "a.png")
    expected = reward(pixels[None].float() / 255).reward
    torch.testing.assert_close(reward([image]).reward, expected)
    torch.testing.assert_close(reward(tmp_path / "a.png").reward, expected)
    torch.testing.assert_close(reward([str(tmp_path / "a.png")]).reward, expected)


def test_missing_and_unreadable_files_are_named(reward, tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        reward([tmp_path / "nope.png"])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InvalidInputError, match="broken.png"):
        reward([tmp_path / "broken.png"])


def test_images_of_different_sizes_are_scored_in_their_order(reward):
    images = [torch.full((3, 4, 4), 0.1), torch.full((3, 6, 6), 0.2), torch.full((3, 4, 4), 0.3)]
    torch.testing.assert_close(reward(images).reward, torch.tensor([0.1, 0.2, 0.3]))
    # list items may be batches themselves: every row counts, in order
    batches = [constant_images(0.1, 0.2, size=4), constant_images(0.9, size=6)]
    torch.testing.assert_close(reward(batches).reward, torch.tensor([0.1, 0.2, 0.9]))
    needs_prompt = MeanPixelReward(needs_prompt=True)
    with pytest.raises(InvalidInputError, match="prompts: got 2 prompts for 3 samples"):
        needs_prompt(batches, ["a", "b"])


def test_reward_is_frozen_and_stays_in_eval_mode(tiny_clip_dir):
    clip = load_reward(f"local-dir:{tiny_clip_dir}")
    parent = torch.nn.Sequential(clip)
    parent.train()  # a trainer switching its modules to training must not reach the reward
    assert not clip.training and not any(m.training for m in clip.modules())
    assert sum(p.numel() for p in clip.parameters()) > 0
    assert not any(p.requires_grad for p in clip.parameters())


def test_non_differentiable_reward_refuses_gradient_requests():
    reward = load_reward("jpeg-compressibility")
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    with pytest.raises(NotDifferentiableError, match="samples.detach()"):
        reward(images)
    assert reward(images.detach()).reward.shape == (2,)
    with torch.no_grad():
        assert reward(images).reward.shape == (2,)


def test_masked_items_become_nan_and_the_mask_says_so():
    output = RewardOutput(reward=torch.tensor([1.0, 2.0, 3.0]), mask=torch.tensor([True, False, True]))
    assert torch.isnan(output.reward[1]) and output.mask.tolist() == [True, False, True]
    derived = RewardOutput(reward=torch.tensor([1.0, float("nan")]))
    assert derived.mask.tolist() == [True, False]
    with pytest.raises(InvalidInputError):
        RewardOutput(reward=torch.zeros(2, 1))


def test_nan_pixels_give_a_masked_score_and_folders_are_named(reward, tmp_path):
    images = constant_images(0.2, 0.6)
    images[0, 0, 0, 0] = float("nan")
    output = reward(images)
    assert output.mask.tolist() == [False, True] and torch.isnan(output.reward[0])
    with pytest.raises(InvalidInputError, match="is a folder"):
        reward([tmp_path])
    with pytest.raises(InvalidInputError, match="contains infinite values"):
        reward(torch.full((1, 3, 4, 4), float("inf")))


def test_nan_items_are_masked_for_every_reward_and_spare_the_others_gradients():
    images = constant_images(0.2, 0.6).requires_grad_(True)
    with torch.no_grad():
        poisoned = images.clone()
    poisoned[0, 0, 0, 0] = float("nan")
    jpeg = load_reward("jpeg-compressibility")(poisoned.detach())
    assert jpeg.mask.tolist() == [False, True] and torch.isnan(jpeg.reward[0])
    leaf = poisoned.detach().requires_grad_(True)
    output = MeanPixelReward(2, 0)(leaf)
    output.reward.nan_to_num(0.0).sum().backward()
    assert torch.isfinite(leaf.grad).all() and leaf.grad[1].abs().sum() > 0


def test_prompts_of_the_wrong_type_are_named(reward):
    with pytest.raises(InvalidInputError, match="prompts: expected a string or a list"):
        MeanPixelReward(needs_prompt=True)(constant_images(0.1), 5)
