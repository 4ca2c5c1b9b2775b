"""The shapes world's measurements: ShapesEval's agreement with ground truth, and shapes-clip's
held-out retrieval accuracy.

    python benchmarks/bench_shapes.py [--renders 2000] [--image-size 32]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    from mmalign.rewards import load_reward
    from mmalign.shapes.agreement import oracle_agreement
    from mmalign.shapes.train_clip import retrieval_accuracy

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renders", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--retrieval-renders", type=int, default=600)
    args = parser.parse_args()

    start = time.perf_counter()
    agreement = oracle_agreement(args.renders, args.image_size)
    print(f"ShapesEval vs ground truth: {args.renders} held-out renders at {args.image_size} px, "
          f"{agreement['judgements']} judgements (own caption + one hard negative each), "
          f"{time.perf_counter() - start:.0f} s\n")
    categories = list(next(iter(agreement["by_perturbation"].values())))
    print("| perturbation | " + " | ".join(categories) + " |")
    print("|---|" + "---|" * len(categories))
    for name, row in agreement["by_perturbation"].items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in categories) + " |")
    print(f"\noverall agreement: {agreement['overall']:.4f}\n")

    retrieval = retrieval_accuracy(load_reward("shapes-clip"), renders=args.retrieval_renders)
    print(f"shapes-clip on {retrieval['renders']} held-out renders: own caption above all its hard negatives "
          f"{retrieval['vs_hard_negatives']:.3f}; top-1 among its category's captions {retrieval['vs_category']:.3f}")


if __name__ == "__main__":
    main()
