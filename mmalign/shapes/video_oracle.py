"""Video ShapesEval: the gold judge of the shapes video world, frame by frame with the image oracle's
detector, then over time.

Three judgements per clip, and the clip passes when all hold:

- ``object``: every frame shows the named shape (in the named colour, if one is named);
- ``direction``: the tracked object's centroid travels at least :data:`MIN_TRAVEL` of the image
  along the named direction, and at least twice as far along it as across it;
- ``smoothness``: no teleporting or flicker. The object is in every frame, no step between frames
  jumps more than :data:`MAX_STEP`, and its area never changes by more than a factor of
  :data:`MAX_AREA_RATIO` from one frame to the next.

The object is tracked from its first-frame detection to the nearest matching detection of each
next frame. It is an evaluation oracle: never use it as a training reward.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .grammar import UnjudgeablePromptError
from .oracle import Detection, _as_uint8, detect
from .video import DIRECTIONS, MotionPrompt, parse_motion_prompt

MIN_TRAVEL = 0.15
MAX_STEP = 0.2
MAX_AREA_RATIO = 2.0
HEADS = ("object", "direction", "smoothness")


@dataclass
class VideoVerdict:
    prompt: str
    passed: bool | None  # None: the prompt is outside the video grammar
    heads: dict[str, bool] = field(default_factory=dict)
    track: list[Detection | None] = field(default_factory=list)
    reason: str = ""


@dataclass
class VideoEvalReport:
    """Accuracy per head and overall over the judged clips."""

    accuracy: dict[str, float]
    count: int
    unjudged: list[str]

    def table(self) -> str:
        lines = [f"{'head':<12} {'accuracy':>9}"] + [f"{h:<12} {a:>9.3f}" for h, a in self.accuracy.items()]
        return "\n".join(lines + [f"({self.count} clips)"])


def track(frames: list[list[Detection]], prompt: MotionPrompt) -> list[Detection | None]:
    """The named object through the frames: the largest match in the first frame where one shows,
    then in each frame the match nearest to where it was last seen (None where none matches)."""
    def matches(detections):
        return [d for d in detections if d.shape == prompt.shape and (prompt.colour is None or d.colour == prompt.colour)]

    path: list[Detection | None] = []
    last = None
    for detections in frames:
        found = matches(detections)
        if not found:
            path.append(None)
            continue
        last = max(found, key=lambda d: d.area) if last is None else min(
            found, key=lambda d: (d.x - last.x) ** 2 + (d.y - last.y) ** 2)
        path.append(last)
    return path


def judge_track(path: list[Detection | None], prompt: MotionPrompt) -> dict[str, bool]:
    present = [d for d in path if d is not None]
    heads = {"object": len(present) == len(path)}
    if len(present) < 2:
        return {**heads, "direction": False, "smoothness": False}
    dx, dy = present[-1].x - present[0].x, present[-1].y - present[0].y
    ux, uy = DIRECTIONS[prompt.direction]
    along, across = dx * ux + dy * uy, abs(dx * uy - dy * ux)
    heads["direction"] = bool(along >= MIN_TRAVEL and along >= 2 * across)
    steps = [np.hypot(b.x - a.x, b.y - a.y) for a, b in zip(present, present[1:])]
    ratios = [max(a.area, b.area) / max(min(a.area, b.area), 1e-9) for a, b in zip(present, present[1:])]
    heads["smoothness"] = bool(heads["object"] and max(steps) <= MAX_STEP and max(ratios) <= MAX_AREA_RATIO)
    return heads


class ShapesVideoEval:
    """Judge clips against shapes-video captions; ``evaluate`` reports accuracy per head and overall."""

    def judge(self, video, prompt: str) -> VideoVerdict:
        """``video``: ``[T,H,W,3]`` uint8, or ``[T,3,H,W]`` floats in [0,1] as video pipelines return them."""
        try:
            parsed = parse_motion_prompt(prompt)
        except UnjudgeablePromptError as error:
            return VideoVerdict(prompt, None, reason=str(error))
        frames = [detect(_as_uint8(frame)) for frame in video]
        path = track(frames, parsed)
        heads = judge_track(path, parsed)
        return VideoVerdict(prompt, all(heads.values()), heads, path)

    def evaluate(self, videos, prompts: list[str]) -> VideoEvalReport:
        if len(videos) != len(prompts):
            raise UnjudgeablePromptError(f"prompts: got {len(prompts)} prompts for {len(videos)} videos.")
        results, unjudged = defaultdict(list), []
        for video, prompt in zip(videos, prompts):
            verdict = self.judge(video, prompt)
            if verdict.passed is None:
                unjudged.append(verdict.reason)
                continue
            for head, value in verdict.heads.items():
                results[head].append(value)
            results["overall"].append(verdict.passed)
        accuracy = {head: float(np.mean(results[head])) for head in (*HEADS, "overall") if results[head]}
        return VideoEvalReport(accuracy, len(results["overall"]), unjudged)
