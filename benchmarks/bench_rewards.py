"""Scoring throughput of mmalign's CLIP reward, side by side with the paths it replaces.

Three ways to score the same images with the same architecture and weights, timed in one run:

- ``raw open_clip``: the hand-written minimum (normalise, ``encode_image``, ``encode_text``, cosine)
  on images already at the model's size;
- ``mmalign CLIPScore``: ``reward(images, prompts)``, with input checks and torch preprocessing;
- ``PIL preprocessing``: tensors to PIL, open_clip's own eval transform, then the same forward.

It also prints how closely the torch preprocessing agrees with open_clip's PIL transform.

    python benchmarks/bench_rewards.py                 # ViT-B-32 with random weights, CPU
    python benchmarks/bench_rewards.py --model ViT-L-14 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from PIL import Image


def interleaved_medians(functions: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, the calls interleaved round by round so that
    drifts in machine load hit every path alike; one warm-up round first."""
    samples = {name: [] for name in functions}
    for round_index in range(repeats + 1):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if round_index:
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def main() -> None:
    import open_clip

    from mmalign.rewards.clip import CLIPScore, OpenCLIPEncoder
    from mmalign.rewards.preprocess import normalize

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default=None, help="open_clip tag; None = random weights (no download)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    encoder = OpenCLIPEncoder.from_pretrained(args.model, args.pretrained, device=args.device)
    reward = CLIPScore(encoder)
    _, _, pil_transform = open_clip.create_model_and_transforms(args.model, pretrained=None)
    size = encoder.image_size
    prompts = ["a red circle left of a blue square"] * args.batch_size
    images = torch.rand(args.batch_size, 3, size, size, device=args.device)
    larger = torch.nn.functional.interpolate(torch.rand(args.batch_size, 3, 32, 40), size=(256, 320), mode="bilinear")
    larger = ((larger * 255).round() / 255).to(args.device)
    pil_images = [Image.fromarray((x * 255).round().byte().permute(1, 2, 0).cpu().numpy()) for x in larger]
    model, tokenizer = encoder.model, encoder.tokenizer

    def raw_forward(pixels):
        image = torch.nn.functional.normalize(model.encode_image(normalize(pixels, encoder.mean, encoder.std)), dim=-1)
        text = torch.nn.functional.normalize(model.encode_text(tokenizer(prompts).to(args.device)), dim=-1)
        return (image * text).sum(-1)

    def pil_path():
        pixels = torch.stack([pil_transform(image) for image in pil_images]).to(args.device)
        image = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
        text = torch.nn.functional.normalize(model.encode_text(tokenizer(prompts).to(args.device)), dim=-1)
        return (image * text).sum(-1)

    rows = list(interleaved_medians({
        f"raw open_clip, {size}px input": lambda: raw_forward(images),
        f"mmalign CLIPScore, {size}px input": lambda: reward(images, prompts),
        "mmalign CLIPScore, 256x320 input": lambda: reward(larger, prompts),
        "PIL preprocessing, 256x320 input": pil_path,
    }, args.repeats).items())
    base = rows[0][1]
    print(f"\n{args.model} ({'random weights' if args.pretrained is None else args.pretrained}), batch {args.batch_size}, "
          f"{args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}\n")
    print("| path | s/batch | images/s | vs raw open_clip |\n|---|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {args.batch_size / seconds:.1f} | {seconds / base:.2f}x |")
    preprocessing = interleaved_medians({
        "torch": lambda: encoder.preprocess(larger),
        "PIL": lambda: torch.stack([pil_transform(image) for image in pil_images]),
    }, args.repeats)
    torch_prep, pil_prep = preprocessing["torch"], preprocessing["PIL"]
    print(f"\nwhole path, PIL / mmalign time: {rows[3][1] / rows[2][1]:.2f}x")
    print(f"preprocessing alone (256x320 -> {size}px): torch {1e3 * torch_prep:.1f} ms, "
          f"PIL {1e3 * pil_prep:.1f} ms per batch (PIL / torch: {pil_prep / torch_prep:.2f}x)")

    ours = encoder.preprocess(larger)
    theirs = torch.stack([pil_transform(image) for image in pil_images]).to(args.device)
    difference = (ours - theirs).abs()
    score_gap = (reward(larger, prompts).reward - pil_path()).abs().max().item()
    print(f"agreement with open_clip's PIL transform: mean |Δpixel| {difference.mean():.4f}, "
          f"max {difference.max():.4f} (normalised units; one uint8 step is {1 / 255 / min(encoder.std):.4f}); "
          f"max |Δscore| {score_gap:.2e}")


if __name__ == "__main__":
    main()
