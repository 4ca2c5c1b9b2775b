"""Stable Target Field (Xu et al. 2023, "Stable Target Field for Reduced Variance Score Estimation in
Diffusion Models"): a lower-variance training target for high noise levels.

Flow matching regresses the velocity ``(x_t − x₀)/t`` of one clip ``x₀``. Near t = 1 the noisy input
says almost nothing about which clip it came from, so the target swings from clip to clip and its
gradient is mostly noise. STF replaces ``x₀`` with the posterior mean of the clean latent over a
reference set that contains the clip itself: each reference ``x_r`` weighs
``exp(−‖x_t − (1 − t)·x_r‖² / 2t²)``, the likelihood of ``x_t`` under ``x_t = (1 − t)·x_r + t·ε``.
At low noise the clip's own term dominates and the target is the usual one; at high noise it tends
to the references' mean, which is what the best model predicts there.
"""

from __future__ import annotations

import torch


def stable_targets(noisy: torch.Tensor, t: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Posterior-mean clean latents ``[B, ...]`` of ``noisy`` ``[B, ...]`` at noise levels ``t`` ``[B]``,
    each over its own ``references`` ``[B, R, ...]`` (the sample's own clean latent among them)."""
    if references.shape[0] != noisy.shape[0] or references.shape[2:] != noisy.shape[1:]:
        raise ValueError(f"references: shape {tuple(references.shape)} "
                         f"should be [batch, R, *{tuple(noisy.shape[1:])}].")
    scale = (1 - t).view(-1, 1, *[1] * (noisy.dim() - 1))
    distances = (noisy.unsqueeze(1) - scale * references).flatten(2).pow(2).sum(-1)  # [B, R]
    weights = torch.softmax(-distances / (2 * t.view(-1, 1) ** 2), dim=1)
    return torch.einsum("br,br...->b...", weights, references)
