"""The shapes world: captioned renders and clips with ground truth, the ShapesEval oracles for images
and videos, and tiny models trained on it, so every method runs on a CPU and its effect is measured
against ground truth."""

from .data import ShapesDataset, sample
from .grammar import CATEGORIES, COLOURS, HELD_OUT_PAIRS, RELATIONS, SHAPES, Prompt, parse_prompt, prompts_for
from .oracle import EvalReport, ShapesEval, Verdict, detect, satisfies
from .scenes import Scene, ShapeObject, render, scene_for
from .video import DIRECTIONS, MotionPrompt, clip_for, motion_prompts_for, parse_motion_prompt, render_clip, sample_clip
from .video_oracle import ShapesVideoEval, VideoVerdict

__all__ = [
    "CATEGORIES", "COLOURS", "HELD_OUT_PAIRS", "RELATIONS", "SHAPES", "EvalReport", "Prompt", "Scene",
    "ShapeObject", "ShapesDataset", "ShapesEval", "Verdict", "detect", "parse_prompt", "prompts_for", "render",
    "sample", "satisfies", "scene_for", "DIRECTIONS", "MotionPrompt", "ShapesVideoEval", "VideoVerdict", "clip_for",
    "motion_prompts_for", "parse_motion_prompt", "render_clip", "sample_clip",
]
