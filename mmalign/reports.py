"""Pictures of results: base-versus-aligned sheets with their scores, and reward curves."""

from __future__ import annotations

from pathlib import Path

import torch

from .storage import atomic_write

PANEL = 192  # pixels; the shapes world's 32×32 images are enlarged without smoothing


def comparison_sheet(columns: dict[str, torch.Tensor], captions: dict[str, list[str]], prompts: list[str], path: Path) -> Path:
    """One row per prompt, one column per named image batch (``[B,3,H,W]`` in [0,1]), each panel with
    its caption line (scores) under it; the prompt heads its row."""
    from PIL import Image, ImageDraw

    line = 14
    header, footer = line + 6, line + 6
    width, height = PANEL * len(columns), (header + PANEL + footer) * len(prompts) + line + 6
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for column, name in enumerate(columns):
        draw.text((column * PANEL + 4, 3), name, fill="black")
    for row, prompt in enumerate(prompts):
        top = line + 6 + row * (header + PANEL + footer)
        draw.text((4, top + 3), prompt[: PANEL * len(columns) // 6], fill="black")
        for column, (name, images) in enumerate(columns.items()):
            pixels = (images[row].detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
            panel = Image.fromarray(pixels).resize((PANEL, PANEL), Image.NEAREST)
            sheet.paste(panel, (column * PANEL, top + header))
            draw.text((column * PANEL + 4, top + header + PANEL + 3), captions[name][row], fill="black")
    atomic_write(Path(path), lambda temporary: sheet.save(temporary, format="PNG"))
    return Path(path)


def reward_curve(history: list[dict], path: Path, title: str = "") -> Path:
    """Each reward head and the weighted total against iteration, averaged over images, with the
    spread across images shaded when there is more than one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iterations = [entry["iteration"] for entry in history]
    series = {"weighted": [entry["weighted_reward"] for entry in history]}
    if len(history[0]["rewards"]) > 1:
        series.update({name: [entry["rewards"][name] for entry in history] for name in history[0]["rewards"]})
    figure, axis = plt.subplots(figsize=(6, 3.6), dpi=120)
    for name, values in series.items():
        values = torch.tensor(values, dtype=torch.float64)  # [iterations, images]
        axis.plot(iterations, values.mean(1), label=name)
        if values.shape[1] > 1:
            axis.fill_between(iterations, values.min(1).values, values.max(1).values, alpha=0.15)
    axis.set_xlabel("iteration")
    axis.set_ylabel("reward")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    atomic_write(Path(path), lambda temporary: figure.savefig(temporary, format="png"))
    plt.close(figure)
    return Path(path)


TRAINING_PANELS = (
    ("proxy reward", ("reward_mean", "reward_kept", "eval_proxy")),
    ("oracle / accuracy", ("shapes_eval", "accuracy")),
    ("loss", ("loss",)),
    ("implicit preference accuracy", ("implicit_accuracy",)),
    ("KL to the reference", ("kl_to_reference",)),
)


def training_curves(history: list[dict], path: Path, title: str = "") -> Path:
    """A fine-tune run's log as curves against iteration: the proxy reward (sampled, kept, held-out),
    the oracle (ShapesEval or a verifier's accuracy), the loss, and for preference methods the implicit
    preference accuracy and the KL to the reference, one panel each; a panel whose metrics were never
    logged is left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(label, [key for key in keys if any(key in row for row in history)]) for label, keys in TRAINING_PANELS]
    panels = [(label, keys) for label, keys in panels if keys]
    figure, axes = plt.subplots(1, max(1, len(panels)), figsize=(4 * max(1, len(panels)), 3.2), dpi=110, squeeze=False)
    for axis, (label, keys) in zip(axes[0], panels):
        for key in keys:
            points = [(row["iteration"], row[key]) for row in history if key in row]
            axis.plot(*zip(*points), marker="o", markersize=3, label=key)
        axis.set_xlabel("iteration")
        axis.set_title(label, fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    atomic_write(Path(path), lambda temporary: figure.savefig(temporary, format="png"))
    plt.close(figure)
    return Path(path)
