"""ShapesEval of a generator on a prompt split, with a proxy reward's mean beside it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .grammar import CATEGORIES, prompts_for
from .oracle import EvalReport, ShapesEval


@dataclass
class ModelEvaluation:
    report: EvalReport
    proxy_name: str | None
    proxy_mean: float | None
    prompts: list[str]

    def to_dict(self) -> dict:
        return {"shapes_eval": asdict(self.report), "proxy": self.proxy_name, "proxy_mean": self.proxy_mean,
                "prompts": len(self.prompts)}

    def table(self) -> str:
        lines = [self.report.table()]
        if self.proxy_name:
            lines.append(f"mean {self.proxy_name} reward: {self.proxy_mean:.4f}")
        return "\n".join(lines)


def evaluation_prompts(split: str = "heldout", per_category: int = 16, seed: int = 0) -> list[str]:
    """A fixed sample of ``per_category`` prompts from each category of ``split``."""
    generator = torch.Generator().manual_seed(seed)
    prompts = []
    for category in CATEGORIES:
        pool = prompts_for(split, category)
        picks = torch.randint(len(pool), (per_category,), generator=generator)
        prompts.extend(pool[i].text for i in picks)
    return prompts


def generate_images(pipeline, prompts: list[str], seed: int = 0, batch_size: int = 32, **call_kwargs) -> torch.Tensor:
    """``[N,3,H,W]`` images in [0,1], one per prompt, seeded per batch so results repeat."""
    return generate_batches(pipeline, prompts, "images", seed, batch_size, call_kwargs)


def generate_videos(pipeline, prompts: list[str], seed: int = 0, batch_size: int = 32, **call_kwargs) -> torch.Tensor:
    """``[N,T,3,H,W]`` videos in [0,1] from a video pipeline, one per prompt, seeded per batch."""
    return generate_batches(pipeline, prompts, "frames", seed, batch_size, call_kwargs)


@torch.no_grad()
def generate_batches(pipeline, prompts: list[str], field: str, seed: int, batch_size: int, call_kwargs: dict) -> torch.Tensor:
    samples = []
    for start in range(0, len(prompts), batch_size):
        generator = torch.Generator(pipeline.device).manual_seed(seed + start)
        output = pipeline(prompts[start : start + batch_size], generator=generator, output_type="pt", **call_kwargs)
        samples.append(getattr(output, field).float().cpu())
    return torch.cat(samples)


def evaluate_images(images: torch.Tensor, prompts: list[str], proxy=None) -> ModelEvaluation:
    report = ShapesEval().evaluate(list(images), prompts)
    proxy_mean = None
    if proxy is not None:
        with torch.no_grad():
            proxy_mean = float(proxy(images, prompts).reward.nanmean())
    return ModelEvaluation(report, getattr(proxy, "name", None), proxy_mean, prompts)
