"""as_trl_reward_func: TRL's reward-function contract, and a real GRPOTrainer run with an mmalign reward."""

import pickle

import pytest
import torch

from mmalign.errors import InvalidInputError
from mmalign.rewards import as_trl_reward_func, load_reward
from text_toys import write_llama_lm

VERIFIER = "shapes-arithmetic-verifier"


def test_standard_and_conversational_formats_and_none_for_unscorable():
    reward_func = as_trl_reward_func(load_reward(VERIFIER))
    assert reward_func.__name__ == VERIFIER  # TRL logs rewards/<__name__>/mean
    prompts = ["123+45=", "512-87=", "Tell me a joke."]
    completions = ["168", "424", "No."]
    extras = dict(completion_ids=[[1], [2], [3]], trainer_state=None, answer=["168", "425", ""])  # TRL's extra kwargs
    assert reward_func(prompts=prompts, completions=completions, **extras) == [1.0, 0.0, None]
    chat_prompts = [[{"role": "user", "content": p}] for p in prompts]
    chat_completions = [[{"role": "assistant", "content": c}] for c in completions]
    assert reward_func(prompts=chat_prompts, completions=chat_completions, **extras) == [1.0, 0.0, None]
    assert pickle.loads(pickle.dumps(reward_func))(prompts=prompts[:1], completions=completions[:1]) == [1.0]


def test_only_text_rewards_are_accepted():
    with pytest.raises(InvalidInputError, match="reward: 'jpeg-compressibility' scores image.*Fix: pick a text reward"):
        as_trl_reward_func(load_reward("jpeg-compressibility"))
    with pytest.raises(InvalidInputError, match="reward: expected an mmalign Reward, got function"):
        as_trl_reward_func(lambda prompts, completions: [0.0])


@pytest.mark.parametrize("conversational", [False, True])
def test_grpo_trainer_runs_with_an_mmalign_reward(tmp_path, conversational):
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    folder = write_llama_lm(tmp_path / "lm")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    reward = load_reward(VERIFIER)
    calls = []
    score = reward.forward
    reward.forward = lambda completions, prompts: calls.append((completions, prompts)) or score(completions, prompts)
    prompts = ["123+45=", "512-87=", "77+8=", "300-1="]
    rows = [[{"role": "user", "content": p}] for p in prompts] if conversational else prompts
    config = trl.GRPOConfig(
        output_dir=str(tmp_path / "grpo"), max_steps=2, per_device_train_batch_size=4, num_generations=4,
        max_completion_length=8, learning_rate=1e-3, beta=0.0, logging_steps=1, report_to="none", use_cpu=True,
        save_strategy="no", seed=0, bf16=False,
    )
    trainer = trl.GRPOTrainer(model=model, reward_funcs=[as_trl_reward_func(reward)], args=config,
                              train_dataset=datasets.Dataset.from_dict({"prompt": rows}), processing_class=tokenizer)
    trainer.train()

    assert trainer.state.global_step == 2
    assert calls, "the mmalign reward was never called"
    for completions, seen_prompts in calls:
        assert all(isinstance(c, str) for c in completions)
        assert len(completions) == len(seen_prompts) and len(seen_prompts) % 4 == 0
        groups = [seen_prompts[i : i + 4] for i in range(0, len(seen_prompts), 4)]
        assert all(group.count(group[0]) == 4 for group in groups)  # num_generations=4 completions per prompt
        assert all(p in rows for p in seen_prompts)  # the dataset's prompts, in the dataset's format
    logged = {key for entry in trainer.state.log_history for key in entry}
    assert f"rewards/{VERIFIER}/mean" in logged and "reward" in logged
