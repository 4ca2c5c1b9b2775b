"""A noise-aware latent reward for Flow-NRG, trained as VideoAlign trains its own (Liu et al.,
"Improving Video Generation with Human Feedback", 2025, Sec. 4.3): a Bradley-Terry loss on
preference pairs whose two latents are noised identically (one ε and one σ per pair), so that the
model scores the noisy ``x_σ`` the sampler holds rather than clean samples (the paper finds a reward
trained on clean latents gives no useful guidance).

The recipe::

    pairs = pairs_from_preferences(pipe, "labels.db", heads=("VQ", "MQ", "TA"))   # or pairs_from_scored_groups
    model = LatentRewardModel(LatentRewardConfig(latent_channels=16, text_dim=4096))
    train_latent_reward(model, pipe, pairs, steps=2000)
    model.save_pretrained("latent-reward")      # then: mmalign nrg --latent-reward latent-reward ...
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InvalidInputError
from ..sampling import flow


@dataclass
class LatentRewardConfig:
    """A small noise-aware reward on a flow model's latents: 3-D convolutions over the latent (a
    video's frames, or an image as one frame), the noise level and the mean text embedding,
    one linear head per name."""

    latent_channels: int
    text_dim: int
    heads: tuple[str, ...] = ("VQ", "MQ", "TA")
    width: int = 32


class LatentRewardModel(nn.Module):
    """``r_h(x_σ, σ, text)`` for each head ``h``, on pipeline-layout latents (not Flux's packed ones)."""

    def __init__(self, config: LatentRewardConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.features = nn.Sequential(
            nn.Conv3d(config.latent_channels + 1, width, 3, padding=1), nn.SiLU(),
            nn.Conv3d(width, width, 3, padding=1, stride=(1, 2, 2)), nn.SiLU(),
            nn.Conv3d(width, width, 3, padding=1), nn.SiLU(),
        )
        self.text = nn.Linear(config.text_dim, width)
        self.heads = nn.ModuleDict({head: nn.Sequential(nn.Linear(2 * width, width), nn.SiLU(), nn.Linear(width, 1))
                                    for head in config.heads})

    def forward(self, latents: Tensor, sigmas: Tensor, text: Tensor) -> dict[str, Tensor]:
        """``latents`` ``[B,C,F,h,w]`` (or ``[B,C,h,w]``), ``sigmas`` ``[B]``, ``text`` ``[B,L,D]``
        (padding rows all zero) → ``{head: [B]}``."""
        x = latents if latents.dim() == 5 else latents.unsqueeze(2)
        noise_level = sigmas.view(-1, 1, 1, 1, 1).to(x).expand(-1, 1, *x.shape[2:])
        pooled = self.features(torch.cat([x, noise_level], 1)).mean(dim=(2, 3, 4))
        tokens = (text.abs().sum(-1, keepdim=True) > 0).to(text)
        words = self.text((text * tokens).sum(1) / tokens.sum(1).clamp_min(1))
        joint = torch.cat([pooled, words], 1)
        return {head: module(joint).squeeze(1) for head, module in self.heads.items()}

    def save_pretrained(self, directory) -> Path:
        """``config.json`` and ``model.safetensors`` in ``directory``."""
        from safetensors.torch import save_file

        from ..storage import atomic_write

        directory = Path(directory)
        atomic_write(directory / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(asdict(self.config), indent=1)))
        atomic_write(directory / "model.safetensors", lambda tmp: save_file(self.state_dict(), tmp))
        return directory

    @classmethod
    def from_pretrained(cls, directory) -> LatentRewardModel:
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / "config.json").is_file() or not (directory / "model.safetensors").is_file():
            raise InvalidInputError(f"latent_reward: {str(directory)!r} holds no config.json and model.safetensors "
                                    "(train_latent_reward's save_pretrained writes them).")
        config = json.loads((directory / "config.json").read_text())
        model = cls(LatentRewardConfig(**{**config, "heads": tuple(config["heads"])}))
        model.load_state_dict(load_file(directory / "model.safetensors"))
        return model.eval()


def bradley_terry_loss(chosen: Tensor, rejected: Tensor) -> Tensor:
    """``−log σ(r_w − r_l)`` per pair (Bradley & Terry 1952)."""
    return -F.logsigmoid(chosen - rejected)


def train_latent_reward(model: LatentRewardModel, pipeline, pairs: list[dict], steps: int = 500, batch_size: int = 32,
                        learning_rate: float = 1e-3, generator: torch.Generator | None = None, progress: bool = True) -> list[float]:
    """Fit ``model`` to preference pairs on identically noised latents (VideoAlign's noise-aware reward).

    ``pairs``: ``{"prompt", "chosen", "rejected", "heads"}`` with pipeline-layout latents and, in
    ``heads``, the heads on which ``chosen`` wins (a pair labelled overall lists every head). Each
    step draws σ uniformly in (0, 1) and one ε per pair, shared by both sides, and sums the
    Bradley-Terry loss over the heads the pair is labelled on. Returns the losses."""
    from tqdm.auto import tqdm

    if not pairs:
        raise InvalidInputError("pairs: no preference pairs to train the latent reward on.")
    if pairs[0]["chosen"].dim() < 3:
        raise InvalidInputError("pairs: latents must be [C,h,w] or [C,F,h,w]; Flux's packed latents are not supported.")
    generator = generator or torch.Generator().manual_seed(0)
    parameter = next(model.parameters())  # inputs go to the model's device and dtype
    prompts = sorted({p["prompt"] for p in pairs})
    text_of = dict(zip(prompts, flow.flow_conditioning(pipeline, prompts)["encoder_hidden_states"].to(parameter)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="latent reward", unit="step", disable=not progress):
        batch = [pairs[i] for i in torch.randint(len(pairs), (min(batch_size, len(pairs)),), generator=generator)]
        chosen, rejected = (torch.stack([p[side] for p in batch]).to(parameter) for side in ("chosen", "rejected"))
        sigmas = torch.rand(len(batch), generator=generator).clamp(0.02, 0.98).to(parameter)
        noise = torch.randn(chosen.shape, generator=generator).to(parameter)
        words = torch.stack([text_of[p["prompt"]] for p in batch])
        scores_w = model(flow.noised(chosen, noise, sigmas), sigmas, words)
        scores_l = model(flow.noised(rejected, noise, sigmas), sigmas, words)
        labelled = torch.tensor([[head in p["heads"] for head in model.config.heads] for p in batch]).to(parameter)
        per_head = torch.stack([bradley_terry_loss(scores_w[h], scores_l[h]) for h in model.config.heads], 1)
        loss = (per_head * labelled).sum() / labelled.sum().clamp_min(1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


def pairs_from_scored_groups(prompts: list[str], latents: Tensor, heads: dict[str, Tensor]) -> list[dict]:
    """Preference pairs for :func:`train_latent_reward` from groups of samples a reward scored per head:
    ``latents`` ``[P, K, ...]`` and ``heads`` ``{head: [P, K]}``. Every two samples of a group make
    a pair, labelled on each head by which scores higher there (ties and NaNs: not labelled), as
    VideoReward's annotators label each dimension."""
    pairs = []
    for p, prompt in enumerate(prompts):
        for i in range(latents.shape[1]):
            for j in range(i + 1, latents.shape[1]):
                first = tuple(h for h, s in heads.items() if s[p, i] > s[p, j])
                second = tuple(h for h, s in heads.items() if s[p, j] > s[p, i])
                pairs += [{"prompt": prompt, "chosen": latents[p, a], "rejected": latents[p, b], "heads": won}
                          for a, b, won in ((i, j, first), (j, i, second)) if won]
    return pairs


def pairs_from_preferences(pipeline, source, heads: tuple[str, ...]) -> list[dict]:
    """Preference pairs for :func:`train_latent_reward` from a store, JSONL or Parquet file: each
    labelled pair's images (or GIF videos) encoded to latents, its one overall label applied to
    every head."""
    from ..prefs import load_preference_pairs

    pairs = []
    for pair in load_preference_pairs(source, include_ties=False):
        chosen, rejected = (pair.left, pair.right) if pair.choice == "left" else (pair.right, pair.left)
        latents = flow.encode(pipeline, torch.stack([chosen, rejected])).cpu()
        pairs.append({"prompt": pair.prompt, "chosen": latents[0], "rejected": latents[1], "heads": heads})
    return pairs
