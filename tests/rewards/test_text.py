"""Text rewards: completion and prompt formats, the exact-answer verifier, and sequence-classification
reward models loaded the way real ones (Skywork-Reward, OpenAssistant's DeBERTa) must be."""

import json
import math

import pytest
import torch

from mmalign.errors import InvalidInputError, NotDifferentiableError, UnknownRewardError, WeightsNotFoundError
from mmalign.rewards import ExactAnswerVerifier, SequenceClassificationReward, load_reward
from mmalign.rewards.text import completion_text, prompt_messages, prompt_text
from text_toys import write_deberta_rm, write_llama_lm, write_llama_rm

VERIFIER = "shapes-arithmetic-verifier"
COMPLETIONS = ["168", "167", "a much longer completion, with words", "9"]
PROMPTS = ["123+45=", [{"role": "user", "content": "123+45="}], "Say something.", "4+5="]


# -- formats -------------------------------------------------------------------------------------

def test_completions_and_prompts_in_both_formats():
    assert completion_text("168") == "168"
    chat = [{"role": "user", "content": "1+2="}, {"role": "assistant", "content": "2"}, {"role": "assistant", "content": "3"}]
    assert completion_text(chat) == "3"  # the last assistant message
    assert prompt_messages("1+2=") == [{"role": "user", "content": "1+2="}]
    assert prompt_text([{"role": "system", "content": "Be exact."}, {"role": "user", "content": "1+2="}]) == "1+2="


def test_wrong_sample_and_prompt_types_name_the_argument_and_fix():
    verifier = load_reward(VERIFIER)
    with pytest.raises(InvalidInputError, match="samples: .*Fix: decode generated token ids"):
        verifier(torch.tensor([[1, 2, 3]]), ["1+2="])
    with pytest.raises(InvalidInputError, match="samples: each text sample must be a string or a chat-message list"):
        verifier([{"text": "3"}], ["1+2="])
    with pytest.raises(InvalidInputError, match="prompts: each text prompt must be a string"):
        verifier(["3"], [42])
    with pytest.raises(InvalidInputError, match="prompts: got 1 prompts for 2 samples"):
        verifier(["3", "4"], ["1+2="])
    with pytest.raises(InvalidInputError, match="prompts: reward 'shapes-arithmetic-verifier' scores completions against"):
        verifier(["3"])
    with pytest.raises(InvalidInputError, match="samples: got an empty batch"):
        verifier([], [])


# -- verifier ------------------------------------------------------------------------------------

def test_verifier_scores_exact_answers_and_masks_prompts_without_one():
    verifier = load_reward(VERIFIER)
    assert isinstance(verifier, ExactAnswerVerifier) and not verifier.spec.differentiable
    output = verifier(COMPLETIONS, PROMPTS)
    assert output.reward[[0, 1, 3]].tolist() == [1.0, 0.0, 1.0]
    assert math.isnan(output.reward[2].item())
    assert output.mask.tolist() == [True, True, False, True]
    with pytest.warns(UserWarning, match="no prompt in this batch"):  # the batch of 'Say something.' alone
        one_by_one = scores_one_by_one(verifier, COMPLETIONS, PROMPTS)
    torch.testing.assert_close(output.reward, one_by_one, equal_nan=True)
    # chat-format completions, as TRL's conversational format passes them
    chat = [[{"role": "assistant", "content": c}] for c in COMPLETIONS]
    torch.testing.assert_close(verifier(chat, PROMPTS).reward, output.reward, equal_nan=True)
    assert verifier("168", "123+45=").reward.tolist() == [1.0]  # one completion, one prompt


def test_verifier_strict_mode_and_a_batch_without_checkable_prompts():
    with pytest.raises(InvalidInputError, match="prompt: 'Say something.' is not an arithmetic prompt"):
        load_reward(VERIFIER, strict=True)(["x"], ["Say something."])
    with pytest.warns(UserWarning, match="no prompt in this batch has a checkable answer.*Fix"):
        output = load_reward(VERIFIER)(["x", "y"], ["Say something.", "Hello"])
    assert not output.mask.any()
    with pytest.raises(InvalidInputError, match="task: 'chess' is not a known verifiable task"):
        ExactAnswerVerifier(task="chess")


def test_verifier_refuses_gradients_like_every_non_differentiable_reward():
    assert not load_reward(VERIFIER).spec.differentiable
    with pytest.raises(NotDifferentiableError):
        load_reward("jpeg-compressibility")(torch.rand(1, 3, 8, 8, requires_grad=True))


# -- sequence-classification reward models -------------------------------------------------------

@pytest.fixture(scope="module")
def llama_rm(tmp_path_factory):
    return write_llama_rm(tmp_path_factory.mktemp("llama-rm"))


@pytest.fixture(scope="module")
def deberta_rm(tmp_path_factory):
    return write_deberta_rm(tmp_path_factory.mktemp("deberta-rm"))


def scores_one_by_one(reward, completions, prompts):
    return torch.cat([reward([c], [p]).reward for c, p in zip(completions, prompts)])


def test_llama_rm_with_chat_template_loads_from_its_folder(llama_rm):
    reward = load_reward(f"local-dir:{llama_rm}")  # a transformers folder without a card: detected
    assert isinstance(reward, SequenceClassificationReward) and reward.input_format == "chat"
    assert reward.spec.modality == "text" and reward.spec.output_kind == "logit" and not reward.spec.differentiable
    # the template is applied to [user prompt, assistant completion], chat prompts included
    texts = reward.texts(COMPLETIONS[:2], PROMPTS[:2])
    expected = "<|begin|><|start|>user\n123+45=<|end|><|start|>assistant\n{}<|end|>"
    assert texts == [expected.format("168"), expected.format("167")]
    # ... and tokenized without a second BOS, since the template holds one
    ids = reward.tokenize(["168"], ["123+45="]).input_ids[0].tolist()
    assert ids.count(reward.tokenizer.bos_token_id) == 1 and ids[0] == reward.tokenizer.bos_token_id


def test_llama_rm_scores_do_not_depend_on_batching_or_padding_side(llama_rm):
    right = SequenceClassificationReward.from_pretrained(llama_rm, padding_side="right", batch_size=8)
    left = SequenceClassificationReward.from_pretrained(llama_rm, padding_side="left", batch_size=3)
    scores = right(COMPLETIONS, PROMPTS).reward
    assert scores.std() > 1e-3  # a random model that still tells inputs apart, so the checks below bite
    torch.testing.assert_close(scores, scores_one_by_one(right, COMPLETIONS, PROMPTS), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores, left(COMPLETIONS, PROMPTS).reward, atol=1e-5, rtol=1e-5)
    padded = right.tokenize(COMPLETIONS, PROMPTS)
    assert (padded.input_ids[:, -1] == right.tokenizer.pad_token_id).any()  # padding really happened


def test_llama_rm_without_pad_token_falls_back_to_eos(tmp_path):
    reward = load_reward(f"sequence-classification:{write_llama_rm(tmp_path, with_pad=False)}")
    assert reward.tokenizer.pad_token == reward.tokenizer.eos_token == "<|end|>"
    assert reward.model.config.pad_token_id == reward.tokenizer.eos_token_id
    scores = reward(COMPLETIONS, PROMPTS).reward  # a batch: needs a pad id in the model config
    torch.testing.assert_close(scores, scores_one_by_one(reward, COMPLETIONS, PROMPTS), atol=1e-5, rtol=1e-5)


def test_deberta_rm_uses_question_answer_pairs_and_no_pad_token(deberta_rm):
    reward = load_reward(f"local-dir:{deberta_rm}")
    assert reward.input_format == "pair" and reward.tokenizer.pad_token == "[SEP]"
    assert reward.texts(["168"], [[{"role": "user", "content": "123+45="}]]) == (["123+45="], ["168"])
    ids = reward.tokenize(["9"], ["4+5="]).input_ids[0].tolist()
    tokens = reward.tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["[CLS]", "4", "+", "5", "=", "[SEP]", "9", "[SEP]"]  # OpenAssistant's tokenizer(q, a)
    scores = reward(COMPLETIONS, PROMPTS).reward
    assert scores.std() > 1e-3
    torch.testing.assert_close(scores, scores_one_by_one(reward, COMPLETIONS, PROMPTS), atol=1e-5, rtol=1e-5)


def test_deberta_rm_refuses_left_padding_which_would_hide_its_cls_token(deberta_rm):
    with pytest.raises(InvalidInputError, match="padding_side: 'left' .*DebertaV2ForSequenceClassification.*'right'"):
        SequenceClassificationReward.from_pretrained(deberta_rm, padding_side="left")


def test_a_card_in_the_folder_passes_its_arguments(llama_rm, tmp_path):
    card = {"name": "my-rm", "family": "sequence-classification", "description": "a test RM", "modality": "text",
            "differentiable": False, "needs_prompt": True, "output_kind": "logit",
            "args": {"model": str(llama_rm), "padding_side": "left", "batch_size": 2}}
    (tmp_path / "reward_card.json").write_text(json.dumps(card))
    reward = load_reward(f"local-dir:{tmp_path}")
    assert (reward.name, reward.padding_side, reward.batch_size) == ("my-rm", "left", 2)


def test_bad_reward_models_get_clear_errors(tmp_path, llama_rm):
    with pytest.raises(InvalidInputError, match="model: .* is a LlamaForCausalLM checkpoint, not a sequence-classification"):
        SequenceClassificationReward.from_pretrained(write_llama_lm(tmp_path / "lm"))
    with pytest.raises(WeightsNotFoundError, match="model: cannot load a reward model from .*Fix: check"):
        SequenceClassificationReward.from_pretrained(tmp_path / "missing")
    with pytest.raises(UnknownRewardError, match="holds neither"):
        load_reward(f"local-dir:{tmp_path / 'lm'}")  # a causal LM folder is not a reward
    two_labels = write_deberta_rm(tmp_path / "two", num_labels=2)
    with pytest.raises(InvalidInputError, match="label: the model has 2 logits"):
        SequenceClassificationReward.from_pretrained(two_labels)
    scores = SequenceClassificationReward.from_pretrained(two_labels, label=1)(["3"], ["1+2="]).reward
    assert scores.shape == (1,)
    with pytest.raises(InvalidInputError, match="padding_side: must be 'left' or 'right'"):
        SequenceClassificationReward.from_pretrained(llama_rm, padding_side="middle")


def test_trust_remote_code_stays_off_unless_asked_for(llama_rm, monkeypatch):
    import transformers

    seen = []
    original = transformers.AutoModelForSequenceClassification.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained",
                        lambda *a, **kw: seen.append(kw["trust_remote_code"]) or original(*a, **kw))
    SequenceClassificationReward.from_pretrained(llama_rm)
    SequenceClassificationReward.from_pretrained(llama_rm, trust_remote_code=True)
    assert seen == [False, True]
