import numpy as np
import pytest

from mmalign.shapes.grammar import (
    CATEGORIES, HELD_OUT_PAIRS, UnjudgeablePromptError, all_prompts, hard_negatives, parse_prompt, prompts_for,
)


def test_every_caption_parses_back_to_itself():
    for category in CATEGORIES:
        for prompt in all_prompts()[category]:
            assert parse_prompt(prompt.text) == prompt
            assert prompt.category == category


def test_parser_accepts_light_variations():
    assert parse_prompt("A photo of three red circles.").text == "three red circles"
    assert parse_prompt("  a  Red circle ").text == "a red circle"
    assert parse_prompt("one blue square").category == "counting"
    assert parse_prompt("a blue square").category == "colour"


def test_unjudgeable_prompts_name_the_part_and_list_the_grammar():
    with pytest.raises(UnjudgeablePromptError, match=r"cannot judge the word\(s\) \['purple', 'cat'\]") as error:
        parse_prompt("a purple cat")
    assert "Colours: red, green, blue, yellow" in str(error.value)
    for wrong in ("circle red a", "one red circles", "three red circle", "an circle"):
        with pytest.raises(UnjudgeablePromptError):
            parse_prompt(wrong)


def test_splits_hold_out_unseen_combinations():
    train, heldout = prompts_for("train"), prompts_for("heldout")
    shared = {p.text for p in train} & {p.text for p in heldout}
    assert shared == {p.text for p in train if p.category in ("single_object", "two_object")}  # too few to hold out
    assert not any(p.pairs() & HELD_OUT_PAIRS for p in train)
    # no held-out prompt says the same thing as a training prompt in other words
    train_texts = {p.text for p in train}
    for prompt in heldout:
        if prompt.category not in ("single_object", "two_object"):
            assert not any(q.text in train_texts for q in prompt.paraphrases()), prompt.text
    assert {p.text for p in parse_prompt("a red circle left of a blue square").paraphrases()} == {
        "a red circle left of a blue square", "a blue square right of a red circle"}
    for category in ("colour", "counting", "position", "colour_attribution"):
        assert prompts_for("heldout", category), category
    with pytest.raises(Exception, match="split"):
        prompts_for("test")


def test_hard_negatives_differ_and_stay_in_the_grammar():
    rng = np.random.default_rng(0)
    for prompt in prompts_for("train")[::7]:
        for negative in hard_negatives(prompt, rng):
            assert negative.text != prompt.text
            assert parse_prompt(negative.text) == negative
    # and a scene drawn for the prompt never satisfies its negatives
    from mmalign.shapes import satisfies
    from mmalign.shapes.scenes import scene_for

    for prompt in prompts_for("train")[::5]:
        scene = scene_for(prompt, rng, held_out_allowed=False)
        assert not any(satisfies(scene.objects, n) for n in hard_negatives(prompt, rng)), prompt.text
    swapped = hard_negatives(parse_prompt("a red circle left of a blue square"), rng)
    assert "a red circle right of a blue square" in {n.text for n in swapped}
