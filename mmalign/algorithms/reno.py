"""ReNO: reward-based noise optimisation of one-step text-to-image models.

Eyring, Karthik, Roth, Dosovitskiy, Akata, "ReNO: Enhancing One-step Text-to-Image Models through
Reward-based Noise Optimization", NeurIPS 2024 (arXiv:2406.04312). Only the initial noise ``z`` is
optimised, against ``Σ_i w_i·(−r_i) + λ·(½‖z‖² − (d−1)·log‖z‖)``; the generator stays frozen.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

from ..errors import InvalidInputError, NotDifferentiableError
from ..rewards import WeightedSum, weighted_objective
from ..sampling import differentiable_call, initial_noise, prompt_embedding_kwargs, stock_pipeline


@dataclass
class ReNOConfig:
    """Defaults of the official code (github.com/ExplainableML/ReNO: ``arguments.py``,
    ``training/optim.py``, ``training/trainer.py``).

    Optimisation:
        iterations (50): images rendered and scored. The first is the base image; every one but the
            last is followed by an optimiser step. ``0`` returns the base image unscored.
        learning_rate (5.0), momentum (0.9), nesterov (True): SGD on the noise.
        max_grad_norm (0.1): the noise gradient's L2 norm is clipped to this, per image.

    Regularisation:
        regularization_weight (0.01): λ of ``½‖z‖² − (d−1)·log‖z‖``, the negative log-density of
            ‖z‖ under the χ distribution of a d-dimensional standard Gaussian, which keeps ``z``
            in the typical set. It is computed in fp32: in fp16, ‖z‖² overflows at SDXL size.

    Stopping:
        early_stopping_patience (None): stop once no image has found a better weighted reward in
            this many iterations. ``None`` runs every iteration, as the paper does.

    Memory:
        gradient_checkpointing (False): recompute the activations of the denoiser, the VAE and the
            rewards in the backward pass instead of storing them; slower, much smaller peak.

    The paper's reward weights (HPSv2.1 5.0, ImageReward 1.0, PickScore 0.05, CLIP 0.01, see
    ``PAPER_REWARD_WEIGHTS``) are passed per call with the rewards, as ``reward_weights``.
    """

    iterations: int = 50
    learning_rate: float = 5.0
    momentum: float = 0.9
    nesterov: bool = True
    max_grad_norm: float = 0.1
    regularization_weight: float = 0.01
    early_stopping_patience: int | None = None
    gradient_checkpointing: bool = False

    def __post_init__(self):
        if self.iterations < 0:
            raise InvalidInputError(f"iterations: must be at least 0, got {self.iterations}.")
        if self.learning_rate <= 0 or self.max_grad_norm <= 0 or self.regularization_weight < 0:
            raise InvalidInputError("learning_rate and max_grad_norm must be positive, regularization_weight ≥ 0.")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise InvalidInputError(f"early_stopping_patience: must be at least 1, got {self.early_stopping_patience}.")


PAPER_REWARD_WEIGHTS = {"hpsv2.1": 5.0, "imagereward": 1.0, "pickscore": 0.05, "clip": 0.01}


def noise_regularizer(latents: torch.Tensor) -> torch.Tensor:
    """Per image, ``½‖z‖² − (d−1)·log‖z‖`` in fp32, with d the numel of one image's noise.

    Its gradient is ``z·(1 − (d−1)/‖z‖²)``: zero on the sphere of radius √(d−1), where nearly all the
    mass of a d-dimensional standard Gaussian lies.
    """
    flat = latents.flatten(1).float()
    norm = torch.linalg.vector_norm(flat, dim=1)
    return 0.5 * norm.square() - (flat.shape[1] - 1) * torch.log(norm)


@dataclass
class ReNOOutput:
    """``images`` are the best iterates, ``[B,3,H,W]`` in [0,1]; ``base_images`` the unoptimised
    ones. ``history`` has one entry per iteration: each reward head, the weighted reward, the
    regulariser and the loss, per image."""

    images: torch.Tensor
    base_images: torch.Tensor
    latents: torch.Tensor
    best_iteration: list[int]
    history: list[dict] = field(default_factory=list)

    def rewards_at(self, iteration: int | list[int]) -> dict[str, list[float]]:
        """Every head's reward at ``iteration`` (one per image, or one for all)."""
        iterations = [iteration] * len(self.best_iteration) if isinstance(iteration, int) else iteration
        heads = self.history[0]["rewards"] if self.history else {}
        return {name: [self.history[i]["rewards"][name][b] for b, i in enumerate(iterations)] for name in heads}


def optimize_noise(render, objective, latents: torch.Tensor, config: ReNOConfig, progress: bool = True) -> ReNOOutput:
    """The ReNO loop, for any differentiable ``render(latents) -> images`` and
    ``objective(images) -> RewardOutput`` (its ``reward`` the weighted sum to maximise).

    Images in a batch are optimised independently: the loss is a sum over images, and clipping and
    best-iterate selection are per image, so a batch of B equals B separate runs.
    """
    latents = latents.detach().clone().requires_grad_(True)
    if config.iterations == 0:
        with torch.no_grad():
            base_images = render(latents).detach()
        return ReNOOutput(base_images, base_images, latents.detach(), [0] * len(latents))
    optimizer = torch.optim.SGD([latents], lr=config.learning_rate, momentum=config.momentum, nesterov=config.nesterov)
    history, best_latents, base_images = [], latents.detach().clone(), None
    best_reward, best_iteration, since_improvement = torch.full((len(latents),), -math.inf), [0] * len(latents), 0
    bar = tqdm(range(config.iterations), desc="ReNO", unit="it", disable=not progress, leave=False)
    for iteration in bar:
        optimizer.zero_grad(set_to_none=True)
        images = render(latents)
        if base_images is None:
            base_images, best_images = images.detach().clone(), images.detach().clone()
        scored = objective(images)
        weighted = scored.reward.detach().float().cpu()
        regularizer = noise_regularizer(latents)
        loss = config.regularization_weight * regularizer.sum() - scored.reward.float().sum()
        history.append({"iteration": iteration, "rewards": {k: v.tolist() for k, v in scored.heads.items()},
                        "weighted_reward": weighted.tolist(), "regularizer": regularizer.tolist(),
                        "loss": (config.regularization_weight * regularizer.detach().cpu() - weighted).tolist()})
        if not torch.isfinite(weighted).all():
            warnings.warn(f"ReNO: the reward became NaN or infinite at iteration {iteration}; returning the best "
                          "iterate so far.", RuntimeWarning, stacklevel=2)
            break
        improved = weighted > best_reward
        if improved.any():
            best_reward = torch.where(improved, weighted, best_reward)
            best_images[improved] = images.detach()[improved].to(best_images.dtype)
            best_latents[improved] = latents.detach()[improved]
            best_iteration = [iteration if up else old for up, old in zip(improved.tolist(), best_iteration)]
            since_improvement = 0
        else:
            since_improvement += 1
        bar.set_postfix(reward=f"{best_reward.mean():.4f}")
        if config.early_stopping_patience and since_improvement >= config.early_stopping_patience:
            break
        if iteration < config.iterations - 1:
            loss.backward()
            clip_per_image(latents.grad, config.max_grad_norm)
            optimizer.step()
    return ReNOOutput(best_images, base_images, best_latents, best_iteration, history)


def clip_per_image(gradient: torch.Tensor, max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_`` applied to each image's slice of ``gradient``, in place."""
    norms = torch.linalg.vector_norm(gradient.flatten(1).float(), dim=1)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    gradient.mul_(scale.view(-1, *[1] * (gradient.dim() - 1)).to(gradient.dtype))


def differentiable_objective(rewards, reward_weights=None) -> WeightedSum:
    """The weighted rewards ReNO follows; every member must carry gradients."""
    objective = weighted_objective(rewards, reward_weights)
    for member in objective.members:
        if not member.spec.differentiable:
            raise NotDifferentiableError(
                f"rewards: {member.name!r} is not differentiable, so ReNO cannot follow its gradient. "
                "Fix: rank candidates with best-of-N (mmalign.algorithms.best_of_n), which needs no gradient."
            )
    return objective


def reno(pipeline, prompt: str | list[str], rewards, reward_weights=None, config: ReNOConfig | None = None,
         num_inference_steps: int = 1, guidance_scale: float = 0.0, negative_prompt=None, generator=None,
         latents: torch.Tensor | None = None, height: int | None = None, width: int | None = None,
         progress: bool = True, **call_kwargs) -> ReNOOutput:
    """Run ReNO on any diffusers text-to-image pipeline, one noise per prompt.

    The pipeline is called as it is, with autograd on: the image must be a differentiable function
    of its initial ``latents``, which holds for one- and few-step SD, SDXL, PixArt, SD3 and Flux
    models. ``generator`` seeds the initial noise and then, reseeded identically, every render, as
    the paper does. Extra keyword arguments go to the pipeline's ``__call__``.
    """
    config = config or ReNOConfig()
    objective = differentiable_objective(rewards, reward_weights).to(pipeline.device)
    pipeline = stock_pipeline(pipeline)
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if num_inference_steps > 1 and config.iterations > 0:
        warnings.warn(
            f"ReNO backpropagates through all {num_inference_steps} denoising steps: each iteration costs about "
            f"{num_inference_steps}× the time and activation memory of a one-step model. Consider a one-step model "
            "(SD-Turbo, shapes-turbo) or ReNOConfig(gradient_checkpointing=True).", UserWarning, stacklevel=2)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InvalidInputError("generator: pass one torch.Generator; ReNO reseeds it identically every iteration.")
    # without a generator, draw the seed from the global RNG rather than reseed it (torch.seed() would)
    seed = generator.initial_seed() if generator is not None else int(torch.randint(2**62, ()))
    if latents is None:
        latents = initial_noise(pipeline, len(prompts), torch.Generator().manual_seed(seed), height, width)
    if len(latents) != len(prompts):
        raise InvalidInputError(f"latents: got {len(latents)} noises for {len(prompts)} prompts; pass one per prompt.")
    latents = latents.to(pipeline.device)
    call_kwargs = dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, height=height,
                       width=width, output_type="pt", return_dict=False, **call_kwargs,
                       **prompt_embedding_kwargs(pipeline, prompts, guidance_scale, negative_prompt,
                                                call_kwargs.get("max_sequence_length")))
    call_kwargs = {k: v for k, v in call_kwargs.items() if v is not None}

    device = pipeline.device  # a walk over every module: once, not per iteration

    def render(noise):
        fresh = torch.Generator(device).manual_seed(seed)
        return differentiable_call(pipeline, latents=noise, generator=fresh, **call_kwargs)[0]

    def score(images):
        if config.gradient_checkpointing and images.requires_grad:
            return checkpoint(objective, images, prompts, use_reentrant=False)
        return objective(images, prompts)

    with gradient_checkpointing(pipeline, config.gradient_checkpointing), quiet(pipeline), torch.enable_grad():
        return optimize_noise(render, score, latents, config, progress=progress)


@contextmanager
def quiet(pipeline):
    """No per-render progress bar inside ReNO's own; the pipeline's setting is restored after."""
    before = dict(getattr(pipeline, "_progress_bar_config", {}))  # diffusers keeps it there
    pipeline.set_progress_bar_config(disable=True)
    try:
        yield
    finally:
        pipeline._progress_bar_config = before


@contextmanager
def gradient_checkpointing(pipeline, enabled: bool):
    """Gradient checkpointing of the denoiser and VAE on inside the block, then back as it was."""
    models = [getattr(pipeline, name, None) for name in ("unet", "transformer", "vae")] if enabled else []
    models = [m for m in models if m is not None and not m.is_gradient_checkpointing]
    for model in models:
        model.enable_gradient_checkpointing()
    try:
        yield
    finally:
        for model in models:
            model.disable_gradient_checkpointing()
