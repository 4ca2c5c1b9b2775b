"""shapes-clip: a tiny open_clip model trained contrastively on the shapes world.

Each image is contrasted with every caption of the batch plus one hard negative of its own
caption (another colour, shape or count, the opposite relation, swapped colours). Captions that
repeat within a batch are all positives of their images (multi-positive InfoNCE). Training
images are blurred and noised like a small generator's samples, so the reward reads those too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from .data import ShapesDataset
from .grammar import hard_negatives, parse_prompt
from ..rewards.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from ..storage import atomic_write
from .training import Stopwatch, degrade, load_checkpoint, run_steps, save_checkpoint

MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 96, "patch_size": 4, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
DEFAULTS = {"steps": 1800, "batch_size": 128, "lr": 1e-3, "train_images": 40_000, "seed": 0}


def write_config(directory: Path) -> None:
    config = {"model_cfg": MODEL_CFG, "preprocess_cfg": {"mean": list(OPENAI_CLIP_MEAN), "std": list(OPENAI_CLIP_STD)}}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "open_clip_config.json").write_text(json.dumps(config, indent=2))


def build_model(directory: Path):
    import open_clip

    write_config(directory)
    model = open_clip.create_model(f"local-dir:{directory}", load_weights=False)
    return model, open_clip.get_tokenizer(f"local-dir:{directory}")


def training_negatives(caption: str, rng) -> list[str]:
    """Hard negatives of a training caption that are training captions too: held-out captions
    must not reach the text tower, even as negatives."""
    negatives = [n.text for n in hard_negatives(parse_prompt(caption), rng) if n.split == "train"]
    return negatives or [caption]


def contrastive_loss(image_embeds, text_embeds, captions, negatives_embeds, logit_scale, negatives):
    """Multi-positive InfoNCE: image→(batch captions + hard negatives) and caption→images. Every
    column whose text is an image's own caption is a positive of that image, including another
    image's hard negative that happens to be it."""
    positives = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32)
    negative_positives = torch.tensor([[a == b for b in negatives] for a in captions], dtype=torch.float32)
    logits = logit_scale * image_embeds @ torch.cat([text_embeds, negatives_embeds]).T
    image_targets = torch.cat([positives, negative_positives], dim=1)
    image_loss = -(F.log_softmax(logits, 1) * image_targets / image_targets.sum(1, keepdim=True)).sum(1).mean()
    text_logits = logit_scale * text_embeds @ image_embeds.T
    text_loss = -(F.log_softmax(text_logits, 1) * positives / positives.sum(1, keepdim=True)).sum(1).mean()
    return (image_loss + text_loss) / 2


def train(output_dir: Path, steps: int, seed: int, resume: bool, batch_size: int = DEFAULTS["batch_size"],
          lr: float = DEFAULTS["lr"], train_images: int = DEFAULTS["train_images"], log=print) -> dict:
    torch.manual_seed(seed)
    model, tokenizer = build_model(output_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    rng = np.random.default_rng([seed, 0])
    generator = torch.Generator().manual_seed(seed)
    resume_state = dict(total_steps=steps, rng=rng, generator=generator, model=model, optimizer=optimizer)
    start = load_checkpoint(output_dir, **resume_state) if resume else 0
    watch = Stopwatch()
    images, captions = ShapesDataset("train", length=train_images, seed=seed).render_all()
    log(f"rendered {len(images)} training images in {watch}")
    tokens = {}  # captions repeat: tokenize each once

    def tokenize(texts):
        for text in set(texts) - tokens.keys():
            tokens[text] = tokenizer([text])[0]
        return torch.stack([tokens[t] for t in texts])

    def compute_loss(step: int) -> torch.Tensor:
        index = torch.from_numpy(rng.choice(len(images), batch_size, replace=False))
        batch = degrade(images[index].float() / 255, generator)
        batch_captions = [captions[i] for i in index]
        negatives = [str(rng.choice(training_negatives(c, rng))) for c in batch_captions]
        image_embeds = F.normalize(model.encode_image(normalize(batch)), dim=-1)
        text_embeds = F.normalize(model.encode_text(tokenize(batch_captions)), dim=-1)
        negative_embeds = F.normalize(model.encode_text(tokenize(negatives)), dim=-1)
        return contrastive_loss(image_embeds, text_embeds, batch_captions, negative_embeds,
                                model.logit_scale.exp().clamp(max=100), negatives)

    model.train()
    losses = run_steps(compute_loss, optimizer, start=start, steps=steps, lr=lr, warmup=min(100, steps // 10 + 1),
                       desc="shapes-clip", checkpoint=lambda step: save_checkpoint(output_dir, step, **resume_state))
    model.eval()
    weights = {k: v.half().contiguous() for k, v in model.state_dict().items()}
    atomic_write(output_dir / "open_clip_model.safetensors", lambda tmp: save_file(weights, tmp))
    log(f"trained {steps - start} steps in {watch}; saved {output_dir}")
    return {"steps": steps, "minutes": round(watch.minutes, 1), "losses": losses}


def normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return (images - mean) / std


@torch.no_grad()
def retrieval_accuracy(reward, renders: int = 600, split: str = "heldout", seed: int = 2) -> dict:
    """How often ``reward`` ranks an image's own caption first.

    - ``vs_hard_negatives``: above every one-edit negative of it (colour, shape, count, relation);
    - ``vs_category``: above every other caption of its category in the split (top-1 retrieval).
    """
    from .data import sample
    from .grammar import prompts_for

    rng = np.random.default_rng(seed)
    hard, category_hits = [], []
    for index in range(renders):
        image, prompt, _ = sample(index, split=split, seed=seed)
        pixels = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
        negatives = [n.text for n in hard_negatives(prompt, rng)]
        pool = [p.text for p in prompts_for(split, prompt.category) if p.text != prompt.text]
        pool = list(rng.choice(pool, size=min(63, len(pool)), replace=False)) if pool else []
        captions = [prompt.text, *negatives, *pool]
        scores = reward(pixels.expand(len(captions), -1, -1, -1), captions).reward
        hard.append(bool((scores[0] > scores[1 : 1 + len(negatives)]).all()))
        category_hits.append(bool((scores[0] > scores[1 + len(negatives) :]).all()))
    return {"renders": renders, "vs_hard_negatives": float(np.mean(hard)), "vs_category": float(np.mean(category_hits))}
