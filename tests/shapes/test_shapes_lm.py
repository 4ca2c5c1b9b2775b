"""The text path's shipped models: shapes-lm (a causal LM) and shapes-lm-rm (its reward model), their
recipes, and ``load_causal_lm``."""

import numpy as np
import pytest
import torch

from mmalign import models
from mmalign.errors import InvalidInputError, WeightsNotFoundError
from mmalign.models import SHIPPED_DIR, load_causal_lm
from mmalign.rewards import SequenceClassificationReward, load_reward
from mmalign.shapes import train_lm, train_lm_rm
from mmalign.shapes.arithmetic import answer, arithmetic_prompts, near_miss
from text_toys import write_llama_lm

# Measured on 256 held-out prompts when the weights were trained (see the reward card and
# train_lm's docstring); the bands leave room for the sampling noise of 64 prompts (±6 points).
SAMPLED_ACCURACY_BAND = (0.25, 0.65)  # 0.44 on these 64 prompts; 0.47 on 256
RM_PAIRWISE_ACCURACY_BAND = (0.55, 0.90)  # 0.72 on these 64 pairs; 0.69 on 512 (the card)


def test_load_causal_lm_resolves_names_and_says_what_is_wrong(tmp_path, monkeypatch):
    with pytest.raises(InvalidInputError, match="--model: 'no such model' is neither a shipped causal LM"):
        load_causal_lm("no such model")
    with pytest.raises(InvalidInputError, match="is not a transformers model folder"):
        load_causal_lm(str(tmp_path))
    monkeypatch.setattr(models, "SHIPPED_DIR", tmp_path)
    with pytest.raises(WeightsNotFoundError, match="Fix: retrain them with `python -m mmalign.shapes.train shapes-lm`"):
        load_causal_lm("shapes-lm")


def test_load_causal_lm_on_a_local_folder_is_ready_for_batched_generation(tmp_path):
    model, tokenizer = load_causal_lm(str(write_llama_lm(tmp_path / "lm")))
    assert not model.training and tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    assert next(model.parameters()).dtype == torch.float32


@pytest.fixture(scope="module")
def shapes_lm():
    if not (SHIPPED_DIR / "shapes-lm" / "config.json").is_file():
        pytest.skip("shapes-lm weights not trained: python -m mmalign.shapes.train shapes-lm")
    return load_causal_lm("shapes-lm")


def test_shapes_lm_loads_with_the_stock_auto_classes_and_renders_chats_as_its_training_text():
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    folder = SHIPPED_DIR / "shapes-lm"
    if not (folder / "config.json").is_file():
        pytest.skip("shapes-lm weights not trained")
    assert isinstance(AutoModelForCausalLM.from_pretrained(folder), LlamaForCausalLM)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.padding_side == "left" and None not in (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token)
    chat = [{"role": "user", "content": "123+45="}]
    assert tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == "123+45="
    assert tokenizer.apply_chat_template(chat + [{"role": "assistant", "content": "168"}], tokenize=False) == "123+45=168</s>"
    assert tokenizer.decode(tokenizer("512-87=\n425").input_ids) == "512-87=\n425"  # characters round-trip
    assert sum(f.stat().st_size for f in folder.iterdir() if not f.name.startswith("checkpoint")) < 2_000_000


def test_shapes_lm_is_right_often_but_not_always(shapes_lm):
    model, tokenizer = shapes_lm
    prompts = arithmetic_prompts("heldout", 64, seed=5)
    sampled = train_lm.accuracy(model, tokenizer, prompts, temperature=1.0, seed=0)
    greedy = train_lm.accuracy(model, tokenizer, prompts)
    assert SAMPLED_ACCURACY_BAND[0] <= sampled <= SAMPLED_ACCURACY_BAND[1], sampled
    assert greedy >= sampled - 0.1, (greedy, sampled)  # sampling at T=1 only adds mistakes, give or take noise
    completions = train_lm.complete(model, tokenizer, prompts[:8])
    assert all(c and c.strip().isdigit() for c in completions), completions  # answers, then eos


def test_shapes_lm_rm_prefers_right_answers_to_near_misses_mostly():
    if not (SHIPPED_DIR / "shapes-lm-rm" / "config.json").is_file():
        pytest.skip("shapes-lm-rm weights not trained: python -m mmalign.shapes.train shapes-lm-rm")
    reward = load_reward("shapes-lm-rm")
    assert isinstance(reward, SequenceClassificationReward) and reward.input_format == "chat"
    prompts = arithmetic_prompts("heldout", 64, seed=6)
    rng = np.random.default_rng(0)
    wrong = [near_miss(answer(p), rng) for p in prompts]
    margin = reward([answer(p) for p in prompts], prompts).reward - reward(wrong, prompts).reward
    accuracy = (margin > 0).float().mean().item()
    assert RM_PAIRWISE_ACCURACY_BAND[0] <= accuracy <= RM_PAIRWISE_ACCURACY_BAND[1], accuracy
    chat = [[{"role": "user", "content": p}] for p in prompts[:4]]
    torch.testing.assert_close(reward(wrong[:4], chat).reward, reward(wrong[:4], prompts[:4]).reward)


def test_both_recipes_run_resume_and_export_loadable_folders(tmp_path):
    torch.set_num_threads(1)
    lm_dir, rm_dir = tmp_path / "lm", tmp_path / "rm"
    summary = train_lm.train(lm_dir, steps=4, seed=0, resume=False, log=lambda *_: None, batch_size=8, eval_prompts=4)
    assert len(summary["losses"]) == 4 and (lm_dir / "checkpoint.pt").is_file()
    resumed = train_lm.train(lm_dir, steps=4, seed=0, resume=True, log=lambda *_: None, batch_size=8, eval_prompts=4)
    assert resumed["losses"] == []  # nothing left to do: the checkpoint was at the last step
    model, tokenizer = load_causal_lm(str(lm_dir))
    assert model.dtype == torch.float32 and len(train_lm.complete(model, tokenizer, ["1+2="])) == 1
    rm_summary = train_lm_rm.train(rm_dir, steps=3, seed=0, resume=False, log=lambda *_: None, base=lm_dir,
                                   batch_size=4, own_sample_prompts=8, eval_pairs=8)
    assert 0.0 <= rm_summary["heldout_pairwise_accuracy"] <= 1.0 and len(rm_summary["losses"]) == 3
    assert isinstance(load_reward(f"local-dir:{rm_dir}"), SequenceClassificationReward)
    with pytest.raises(InvalidInputError, match="--steps: .* belongs to a run of 4 steps"):
        train_lm.train(lm_dir, steps=5, seed=0, resume=True, log=lambda *_: None, batch_size=8)
