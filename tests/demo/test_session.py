"""The demo's handlers, called directly on the shipped shapes-turbo: what base and aligned are for
each method, the scores and verdicts shown, the LoRA switched on one pipeline, the vote written to
the store, and a message for every bad input."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest
import torch
from torchvision.transforms.functional import pil_to_tensor

from mmalign.demo import DemoSession
from mmalign.errors import InvalidInputError, MMAlignError, NotDifferentiableError
from mmalign.models import sampling_defaults
from mmalign.prefs.images import as_pil_image
from mmalign.shapes.oracle import ShapesEval

PROMPT = "a red circle left of a blue square"
PARTI = json.loads((Path(__file__).parent / "parti_prompts.json").read_text())


def plain_sample(pipeline, prompt: str, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return pipeline(prompt, generator=generator, output_type="pt", **sampling_defaults("shapes-turbo")).images[0]


def test_reno_pairs_the_plain_sample_with_a_better_scored_one_and_shows_its_curve(session, tiny_clip_dir):
    comparison = session.compare(PROMPT, seed=3, method="ReNO", iterations=6, progress=False)
    torch.testing.assert_close(comparison.base, plain_sample(session.pipeline, PROMPT, 3))
    base_score, aligned_score = comparison.scores["shapes-clip"]
    assert aligned_score > base_score
    assert [row[:2] for row in comparison.curve[:2]] == [(0, "shapes-clip"), (1, "shapes-clip")]
    assert len(comparison.curve) == 6 and comparison.curve[0][2] == pytest.approx(base_score, abs=1e-5)
    assert max(value for *_, value in comparison.curve) == pytest.approx(aligned_score, abs=1e-5)
    two_rewards = session.compare(PROMPT, seed=3, method="ReNO", iterations=2, progress=False,
                                  rewards=f"shapes-clip, local-dir:{tiny_clip_dir}=0.5")
    names = {name for _, name, _ in two_rewards.curve}
    assert len(names) == 3 and {"weighted", "shapes-clip"} < names
    oracle = ShapesEval()
    expected = tuple("pass" if oracle.judge(image, PROMPT).passed else "fail" for image in (comparison.base, comparison.aligned))
    assert comparison.verdicts == expected


def test_best_of_n_pairs_the_first_candidate_with_the_best(session):
    comparison = session.compare(PROMPT, seed=1, method="best-of-N", num_candidates=6, progress=False)
    torch.testing.assert_close(comparison.base, plain_sample(session.pipeline, PROMPT, 1))
    assert comparison.scores["shapes-clip"][1] >= comparison.scores["shapes-clip"][0]
    assert comparison.curve == []


def test_score_rows_follow_the_side_each_image_is_shown_on(session):
    comparison = session.compare(PROMPT, seed=0, method="best-of-N", num_candidates=4,
                                 rewards="shapes-clip, jpeg-compressibility=0.01", progress=False)
    base, aligned = comparison.scores["weighted"]
    assert base == pytest.approx(comparison.scores["shapes-clip"][0] + 0.01 * comparison.scores["jpeg-compressibility"][0])
    rows = {row[0]: row[1:] for row in comparison.score_rows()}
    left_is_aligned = comparison.aligned_side == "left"
    assert rows["weighted"] == [f"{v:.4f}" for v in ((aligned, base) if left_is_aligned else (base, aligned))]
    assert rows["ShapesEval (oracle)"] == list(comparison.verdicts[::-1] if left_is_aligned else comparison.verdicts)
    assert comparison.image(comparison.aligned_side) is comparison.aligned


def test_the_aligned_side_is_drawn_per_pair_not_fixed(tmp_path):
    demo = DemoSession("shapes-turbo", output_dir=tmp_path, rng=random.Random(7))
    sides = [demo.compare(PROMPT, seed=s, method="best-of-N", num_candidates=2, progress=False).aligned_side
             for s in range(12)]
    demo.close()
    assert set(sides) == {"left", "right"}


def test_a_lora_and_its_base_come_from_one_pipeline(session, turbo_lora):
    before = plain_sample(session.pipeline, PROMPT, 5)
    session.load_lora(turbo_lora)
    comparison = session.compare(PROMPT, seed=5, method="LoRA", progress=False)
    torch.testing.assert_close(comparison.base, before)
    assert (comparison.aligned - comparison.base).abs().max() > 1e-3
    torch.testing.assert_close(plain_sample(session.pipeline, PROMPT, 5), comparison.aligned)  # LoRA on again
    reno_pair = session.compare(PROMPT, seed=5, method="ReNO", iterations=2, progress=False)
    torch.testing.assert_close(reno_pair.base, before)  # ReNO runs on the base model


def test_a_lora_of_another_base_is_refused_and_leaves_the_pipeline_clean(session, turbo_lora, foreign_lora):
    before = plain_sample(session.pipeline, PROMPT, 2)
    session.load_lora(turbo_lora)
    with pytest.raises(InvalidInputError, match="another base model"):
        session.load_lora(foreign_lora)
    assert session.lora is None and not getattr(session.pipeline.unet, "peft_config", None)
    torch.testing.assert_close(plain_sample(session.pipeline, PROMPT, 2), before)
    with pytest.raises(InvalidInputError, match="no LoRA is loaded"):
        session.compare(PROMPT, method="LoRA", progress=False)
    with pytest.raises(InvalidInputError, match="holds no pytorch_lora_weights"):
        session.load_lora(str(Path(foreign_lora).parent))
    with pytest.raises(InvalidInputError, match="LoRA folder: empty"):
        session.load_lora("  ")


def test_a_vote_stores_the_pair_as_shown_once(session):
    comparison = session.compare(PROMPT, seed=0, method="best-of-N", num_candidates=3, progress=False)
    label_id = session.vote(comparison, "right", annotator="  ada ")
    (record,) = session.store.records()
    assert (record.id, record.prompt, record.choice, record.annotator, record.source) == (label_id, PROMPT, "right", "ada", "human")
    for side, stored in (("left", record.left), ("right", record.right)):
        shown = pil_to_tensor(as_pil_image(comparison.image(side), side))  # what the page showed on that side
        torch.testing.assert_close(session.store.load_image(stored), shown.float() / 255)
    with pytest.raises(InvalidInputError, match="already labelled"):
        session.vote(comparison, "left")
    second = session.compare(PROMPT, seed=1, method="best-of-N", num_candidates=2, progress=False)
    session.vote(second, "tie", annotator="")
    assert session.label_count() == 2 and session.store.records()[-1].annotator == "anonymous"


@pytest.mark.parametrize("comparison, choice, message", [
    (None, "left", "no image pair yet"),
    ("pair", "better", "the labels are left, right, tie"),
])
def test_bad_votes_are_refused_with_the_fix(session, comparison, choice, message):
    pair = session.compare(PROMPT, method="best-of-N", progress=False) if comparison else None
    with pytest.raises(InvalidInputError, match=message):
        session.vote(pair, choice)
    assert session.label_count() == 0


@pytest.mark.parametrize("arguments, error, message", [
    (dict(prompt=""), InvalidInputError, "Prompt: empty"),
    (dict(prompt="   \n"), InvalidInputError, "Prompt: empty"),
    (dict(prompt=" ".join(PARTI["longest"])[:2000]), InvalidInputError, "2,000 characters"),
    (dict(rewards="no-such-reward"), MMAlignError, "unknown reward 'no-such-reward'"),
    (dict(rewards=" , "), InvalidInputError, "Rewards: none given"),
    (dict(rewards="jpeg-compressibility"), NotDifferentiableError, "not differentiable"),
    (dict(method="DDPO"), InvalidInputError, "pick one of ReNO, best-of-N, LoRA"),
    (dict(iterations=0), InvalidInputError, "ReNO iterations: must be at least 1"),
    (dict(method="best-of-N", num_candidates=1), InvalidInputError, "N must be at least 2"),
    (dict(seed=-1), InvalidInputError, "Seed"),
    (dict(seed=1.5), InvalidInputError, "Seed"),
    (dict(seed="x"), InvalidInputError, "Seed"),
])
def test_bad_input_gets_a_message_naming_the_field(session, arguments, error, message):
    with pytest.raises(error, match=message):
        session.compare(**{"prompt": PROMPT, "progress": False, **arguments})


@pytest.mark.parametrize("prompt", PARTI["unicode"][:3])
def test_unicode_prompts_outside_the_grammar_are_shown_but_not_judged(session, prompt):
    comparison = session.compare(prompt, method="best-of-N", num_candidates=2, progress=False)
    assert comparison.verdicts == ("not judged (outside the shapes grammar)",) * 2
    assert all(torch.isfinite(torch.tensor(v)).all() for v in comparison.scores.values())


def test_a_prompt_past_the_text_encoder_says_what_was_read(session):
    long_prompt = PARTI["longest"][0]  # 389 characters, under the demo's limit
    comparison = session.compare(long_prompt, method="best-of-N", num_candidates=2, progress=False)
    limit = session.pipeline.tokenizer.model_max_length
    assert any(f"read only its first {limit}" in warning for warning in comparison.warnings)
    assert session.compare(PROMPT, method="best-of-N", progress=False).warnings == []


def test_a_bad_reward_at_start_fails_before_serving(tmp_path):
    with pytest.raises(MMAlignError, match="unknown reward"):
        DemoSession("shapes-turbo", rewards="no-such-reward", output_dir=tmp_path)


def test_a_double_click_labels_a_pair_once(session):
    comparison = session.compare(PROMPT, method="best-of-N", num_candidates=2, progress=False)
    start, outcomes = threading.Barrier(8), []

    def click():
        start.wait()
        try:
            outcomes.append(session.vote(comparison, "left"))
        except InvalidInputError as error:
            outcomes.append(str(error))

    clicks = [threading.Thread(target=click) for _ in range(8)]
    for thread in clicks:
        thread.start()
    for thread in clicks:
        thread.join()
    assert session.label_count() == 1 and sum(isinstance(o, int) for o in outcomes) == 1
    assert sum("already labelled" in str(o) for o in outcomes) == 7


def test_the_page_cannot_name_a_remote_reward_and_keeps_few_rewards_loaded(session, tiny_clip_dir):
    with pytest.raises(InvalidInputError, match="remote reward can only be named at start"):
        session.compare(PROMPT, method="best-of-N", rewards="remote:127.0.0.1:1", progress=False)
    for depth in range(8):  # eight names of one folder: eight loaded rewards, were the cache unbounded
        session.objective(f"local-dir:{tiny_clip_dir}{'/.' * depth}")
    assert len(session._rewards) == 6 and f"local-dir:{tiny_clip_dir}{'/.' * 7}" in session._rewards


def test_a_video_model_is_refused_with_the_commands_that_take_it(tmp_path):
    import tiny_pipelines

    folder = tiny_pipelines.save("wan", tmp_path / "wan")
    with pytest.raises(InvalidInputError, match="is a video model; the demo compares images.*mmalign nrg"):
        DemoSession(folder, output_dir=tmp_path / "out")
