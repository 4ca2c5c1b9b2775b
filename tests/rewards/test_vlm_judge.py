"""VLM judges on a tiny Qwen2-VL loaded through AutoModelForImageTextToText and AutoProcessor: P("Yes")
equals the first generated token's probability, the MJ-Bench answers parse (malformed ones to NaN
with a mask, never 0), samples aggregate by mean or majority, pairwise order is drawn at random and
mapped back, and judges that cannot work are refused with the reason."""

import json
import random

import pytest
import torch

from mmalign.errors import InvalidInputError
from mmalign.rewards import load_reward
from mmalign.rewards.vlm_judge import (
    LIKERT_LEVELS,
    VLMJudge,
    parse_level,
    parse_number,
    parse_preference,
)
from vlm_toys import save_llava, save_qwen2_vl

PROMPTS = ["a red circle", "two blue squares"]


@pytest.fixture(scope="module")
def qwen2_vl(tmp_path_factory):
    return save_qwen2_vl(tmp_path_factory.mktemp("qwen2-vl"))


@pytest.fixture(scope="module")
def vqascore(qwen2_vl):
    return load_reward(f"vlm-judge:{qwen2_vl}")


def images(count=2, seed=0):
    return torch.rand(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=["qwen2-vl", "llava"])
def any_vqascore(request, vqascore, tmp_path_factory):
    """The judge on each model family: the same code through the Auto classes."""
    if request.param == "qwen2-vl":
        return vqascore
    return load_reward(f"vlm-judge:{save_llava(tmp_path_factory.mktemp('llava'))}")


def test_yes_probability_is_the_first_answer_tokens_probability_of_yes(any_vqascore):
    vqascore = any_vqascore
    scores = vqascore(images(), PROMPTS)
    assert vqascore.spec.output_kind == "probability" and not vqascore.spec.differentiable
    questions = [f'Does this figure show "{p}"? Please answer yes or no.' for p in PROMPTS]
    for index, question in enumerate(questions):  # one row at a time, through generate's own scores
        batch = vqascore.inputs([[images()[index]]], [question])
        generated = vqascore.model.generate(**batch, max_new_tokens=1, do_sample=False, output_scores=True,
                                            return_dict_in_generate=True)
        expected = generated.scores[0].float().softmax(-1)[0, vqascore.tokenizer.encode("Yes", add_special_tokens=False)[0]]
        torch.testing.assert_close(scores.reward[index], expected, atol=1e-5, rtol=1e-4)
    assert ((scores.reward > 0) & (scores.reward < 1)).all()


def test_batches_do_not_change_yes_probabilities(vqascore):
    prompts = ["a red circle", "two blue squares left of a green triangle", "a square"]
    batched = vqascore(images(3, 1), prompts).reward
    single = torch.cat([vqascore(images(3, 1)[i : i + 1], prompts[i]).reward for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("answer, expected", [
    ('{"ANALYSIS": "fine"} \n\n{"ALIGNMENT-RATING": "7"}', 7.0),
    ('{"ARTIFACTS-RATING": "10"}', 10.0),
    ("8", 8.0),
    ('{"ALIGNMENT-RATING": "8.5/10"}', 8.5),
    ('{"ALIGNMENT-RATING": "11"}', None),      # off the scale
    ('{"ALIGNMENT-RATING": "YOUR RATING"}', None),
    ("The image shows 2 circles.", None),     # a number, but no rating
    ("", None),
])
def test_numeric_answers_parse(answer, expected):
    assert parse_number(answer) == expected


@pytest.mark.parametrize("answer, expected", [
    ('{"ALIGNMENT-RATING": "Good"}', 4),
    ('{"ALIGNMENT-RATING": "Extremely Poor"}', 1),    # not "Poor"
    ('{"alignment-rating": "outstanding"}', 5),
    ("Average", 3),
    ('{"ALIGNMENT-RATING": "Superb"}', None),
    ("I think it is poor overall", None),
])
def test_likert_answers_parse(answer, expected):
    assert parse_level(answer, LIKERT_LEVELS[5]) == expected


def test_ten_level_likert_reads_its_own_labels():
    assert parse_level('{"ALIGNMENT-RATING": "Very Good"}', LIKERT_LEVELS[10]) == 8
    assert parse_level('{"ALIGNMENT-RATING": "Very Poor"}', LIKERT_LEVELS[10]) == 2


@pytest.mark.parametrize("answer, expected", [
    ("IMAGE-1 RATING: 7\n\nIMAGE-2 RATING: 5\n\nBETTER IMAGE: 1\n\nANALYSIS OF CHOICE: ...", "first"),
    ("BETTER IMAGE: 2", "second"),
    ("BETTER IMAGE: 0", "tie"),
    ("BETTER IMAGE: IMAGE-2", "second"),
    ("Both are nice.", None),
])
def test_pairwise_answers_parse(answer, expected):
    assert parse_preference(answer) == expected


def judge_answering(qwen2_vl, mode, answers, **kwargs):
    """A judge of ``mode`` on the tiny model whose generation is replaced by fixed answers per row."""
    judge = load_reward(f"vlm-judge:{qwen2_vl}", mode=mode, **kwargs)
    judge.generate = lambda batch, count=None, sample=None: [list(row) for row in answers]
    return judge


def test_numeric_samples_average_the_answers_that_parse(qwen2_vl):
    judge = judge_answering(qwen2_vl, "numeric", [['{"ALIGNMENT-RATING": "6"}', "garbage", '{"ALIGNMENT-RATING": "9"}'],
                                                  ["no rating", "", "none"]], num_samples=3)
    output = judge(images(), PROMPTS)
    assert output.reward[0].item() == 7.5 and torch.isnan(output.reward[1])
    assert output.mask.tolist() == [True, False]
    torch.testing.assert_close(output.heads["parsed_fraction"], torch.tensor([2 / 3, 0.0]))
    assert judge.spec.output_range == (1.0, 10.0)


def test_likert_samples_take_the_majority_level(qwen2_vl):
    answers = [['{"ALIGNMENT-RATING": "Good"}', '{"ALIGNMENT-RATING": "Good"}', '{"ALIGNMENT-RATING": "Poor"}'],
               ['{"ALIGNMENT-RATING": "Poor"}', '{"ALIGNMENT-RATING": "Outstanding"}', "?"]]
    judge = judge_answering(qwen2_vl, "likert", answers, num_samples=3)
    assert judge(images(), PROMPTS).reward.tolist() == [4.0, 2.0]  # a tie goes to the lower level
    assert judge.spec.output_kind == "likert" and judge.spec.output_range == (1.0, 5.0)


def test_an_untrained_judges_free_text_is_nan_never_zero(qwen2_vl):
    judge = load_reward(f"vlm-judge:{qwen2_vl}", mode="numeric", max_new_tokens=6)
    output = judge(images(), PROMPTS)  # random weights write no rating
    assert torch.isnan(output.reward).all() and not output.mask.any()


def test_pairwise_order_is_random_and_mapped_back(qwen2_vl):
    judge = judge_answering(qwen2_vl, "numeric", [["BETTER IMAGE: 1"]] * 8, seed=5)  # always the first shown
    choices = judge.compare(images(8, 2), images(8, 3), [f"prompt {i}" for i in range(8)], num_samples=1)
    replay = random.Random(5)
    swapped = [replay.random() < 0.5 for _ in range(8)]
    assert choices == ["right" if swap else "left" for swap in swapped]
    assert set(choices) == {"left", "right"}


def test_a_tokenizer_without_a_yes_token_is_refused(tmp_path):
    folder = save_qwen2_vl(tmp_path / "no-yes", whole_words=())
    with pytest.raises(InvalidInputError, match="no single 'Yes' token"):
        load_reward(f"vlm-judge:{folder}")
    assert load_reward(f"vlm-judge:{folder}", mode="numeric").mode == "numeric"  # digits are enough there


def test_a_judge_that_needs_remote_code_is_refused_unless_trusted(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "my_custom_vlm", "auto_map": {
        "AutoConfig": "configuration_x.XConfig", "AutoModelForImageTextToText": "modeling_x.XModel"}}))
    with pytest.raises(InvalidInputError, match="trust_remote_code=True"):
        VLMJudge.from_pretrained(str(tmp_path))


@pytest.mark.parametrize("arguments, message", [
    (dict(mode="stars"), "mode: 'stars' is not one of"),
    (dict(mode="likert", scale=7), "5 or 10 levels"),
    (dict(mode="numeric", num_samples=0), "num_samples"),
])
def test_bad_judge_settings_name_the_argument(qwen2_vl, arguments, message):
    with pytest.raises(InvalidInputError, match=message):
        load_reward(f"vlm-judge:{qwen2_vl}", **arguments)


def test_sampling_leaves_the_callers_rng_alone_and_overrides_greedy_defaults(qwen2_vl):
    judge = load_reward(f"vlm-judge:{qwen2_vl}", mode="numeric", num_samples=2, max_new_tokens=2)
    seen = {}
    generate = judge.model.generate

    def recording(**kwargs):
        seen.update(kwargs)
        return generate(**kwargs)

    judge.model.generate = recording
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    judge(images(), PROMPTS)
    torch.testing.assert_close(torch.rand(3), expected)  # the caller's next draws are what they would have been
    assert (seen["do_sample"], seen["top_k"], seen["top_p"], seen["num_return_sequences"]) == (True, 0, 1.0, 2)


def test_pairs_of_mixed_sizes_are_compared(qwen2_vl):
    judge = judge_answering(qwen2_vl, "numeric", [["BETTER IMAGE: 0"]] * 2)
    first = [torch.rand(3, 32, 32), torch.rand(3, 40, 48)]
    assert judge.compare(first, [torch.rand(3, 32, 32), torch.rand(3, 24, 24)], PROMPTS) == ["tie", "tie"]
