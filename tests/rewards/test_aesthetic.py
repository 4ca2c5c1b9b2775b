import json

import pytest
import torch
from safetensors.torch import save_file

from mmalign.errors import WeightsNotFoundError
from mmalign.rewards import load_reward
from mmalign.rewards.aesthetic import AestheticMLP, AestheticScore


UNPICKLED = []


def _record_unpickling():
    UNPICKLED.append(True)
    return torch.zeros(1)


class RunsCodeWhenUnpickled:
    """Unpickling this calls a function: what a malicious checkpoint does."""

    def __reduce__(self):
        return (_record_unpickling, ())


@pytest.fixture(scope="module")
def head_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("aesthetic")
    torch.manual_seed(0)
    head = AestheticMLP(embed_dim=16)
    save_file(head.state_dict(), str(directory / "head.safetensors"))
    torch.save(head.state_dict(), directory / "head.pth")
    return directory, head


def test_state_dict_keys_are_the_laion_ones():
    keys = set(AestheticMLP().state_dict())
    assert keys == {f"layers.{i}.{kind}" for i in (0, 2, 4, 6, 7) for kind in ("weight", "bias")}


def test_safetensors_and_weights_only_files_give_the_same_scores(head_files, tiny_clip_dir):
    directory, head = head_files
    images = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    from_safetensors = AestheticScore.from_pretrained(directory / "head.safetensors", clip=f"local-dir:{tiny_clip_dir}")
    from_pth = AestheticScore.from_pretrained(directory / "head.pth", clip=f"local-dir:{tiny_clip_dir}")
    score = from_safetensors(images).reward
    torch.testing.assert_close(score, from_pth(images).reward)
    # independent: normalised CLIP embedding through the saved head
    embeds = torch.nn.functional.normalize(from_pth.encoder.model.encode_image(from_pth.encoder.preprocess(images)), dim=-1)
    torch.testing.assert_close(score, head.eval()(embeds).squeeze(-1).detach(), atol=1e-5, rtol=0)
    assert not from_pth.spec.needs_prompt


def test_gradient_reaches_pixels_and_dropout_is_off(head_files, tiny_clip_dir):
    reward = AestheticScore.from_pretrained(head_files[0] / "head.pth", clip=f"local-dir:{tiny_clip_dir}")
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    first = reward(images).reward
    first.sum().backward()
    assert images.grad.abs().sum() > 0
    torch.testing.assert_close(first.detach(), reward(images.detach()).reward)  # no dropout noise


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_missing_corrupt_and_pickled_weights_are_refused(head_files, tiny_clip_dir, tmp_path):
    clip = f"local-dir:{tiny_clip_dir}"
    with pytest.raises(WeightsNotFoundError, match="trl-lib/ddpo-aesthetic-predictor"):
        AestheticScore.from_pretrained(tmp_path / "missing.pth", clip=clip)
    (tmp_path / "corrupt.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsNotFoundError, match="corrupt.safetensors"):
        AestheticScore.from_pretrained(tmp_path / "corrupt.safetensors", clip=clip)
    torch.save({"layers.0.weight": RunsCodeWhenUnpickled()}, tmp_path / "code.pth")
    with pytest.raises(WeightsNotFoundError, match="code.pth"):
        AestheticScore.from_pretrained(tmp_path / "code.pth", clip=clip)
    assert not UNPICKLED, "a full torch.load ran the file's code"


def test_a_head_of_the_wrong_size_is_named(tiny_clip_dir, tmp_path):
    torch.save(AestheticMLP(embed_dim=768).state_dict(), tmp_path / "l14-head.pth")
    with pytest.raises(WeightsNotFoundError, match="embedding size 16"):
        AestheticScore.from_pretrained(tmp_path / "l14-head.pth", clip=f"local-dir:{tiny_clip_dir}")


def test_loads_from_a_local_dir_card(head_files, tiny_clip_dir, tmp_path):
    card = json.loads((load_reward.__globals__["resource_dir"]("cards") / "laion-aesthetic.json").read_text())
    card.update(name="my-aesthetic", args={"clip": f"local-dir:{tiny_clip_dir}", "weights": "head.safetensors"})
    (tmp_path / "reward_card.json").write_text(json.dumps(card))
    (tmp_path / "head.safetensors").write_bytes((head_files[0] / "head.safetensors").read_bytes())
    reward = load_reward(f"local-dir:{tmp_path}")
    assert isinstance(reward, AestheticScore) and reward.name == "my-aesthetic"
    assert reward(torch.rand(1, 3, 32, 32)).reward.shape == (1,)
