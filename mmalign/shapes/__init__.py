"""The shapes world: captioned renders with ground truth, the ShapesEval oracle, and tiny models
trained on it, so every method runs on a CPU and its effect is measured against ground truth."""

from .data import ShapesDataset, sample
from .grammar import CATEGORIES, COLOURS, HELD_OUT_PAIRS, RELATIONS, SHAPES, Prompt, parse_prompt, prompts_for
from .oracle import EvalReport, ShapesEval, Verdict, detect, satisfies
from .scenes import Scene, ShapeObject, render, scene_for

__all__ = [
    "CATEGORIES", "COLOURS", "HELD_OUT_PAIRS", "RELATIONS", "SHAPES", "EvalReport", "Prompt", "Scene",
    "ShapeObject", "ShapesDataset", "ShapesEval", "Verdict", "detect", "parse_prompt", "prompts_for", "render",
    "sample", "satisfies", "scene_for",
]
