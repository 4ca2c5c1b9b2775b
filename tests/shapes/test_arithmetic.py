"""The arithmetic task: answers, exact checking, and disjoint splits."""

import numpy as np
import pytest

from mmalign.errors import InvalidInputError
from mmalign.shapes.arithmetic import (
    answer, arithmetic_prompts, extract_answer, is_arithmetic, is_correct, near_miss, split_of,
)


def test_answers_by_hand():
    assert answer("123+45=") == "168"
    assert answer("512-87=") == "425"
    assert answer("99+901=") == "1000"
    assert answer("40-40=") == "0"
    assert answer(" 12 + 5 = ") == "17"  # spacing is tolerated in prompts


def test_exact_answer_checking():
    assert is_correct("123+45=", "168")
    assert is_correct("123+45=", " 168 \nsome more text")  # up to the first newline, stripped
    for wrong in ("167", "0168", "168.0", "The answer is 168", "", "1 68"):
        assert not is_correct("123+45=", wrong), wrong
    assert extract_answer("42\n43") == "42"


def test_non_arithmetic_prompts_are_refused_with_the_fix():
    assert not is_arithmetic("What is 2+2?") and not is_arithmetic("1234+5=")
    with pytest.raises(InvalidInputError, match="prompt: 'What is 2\\+2\\?' is not an arithmetic prompt.*arithmetic_prompts"):
        answer("What is 2+2?")
    with pytest.raises(InvalidInputError, match="completion: expected a string"):
        is_correct("1+2=", ["3"])


def test_splits_are_disjoint_deterministic_and_well_formed():
    train = arithmetic_prompts("train", 2000, seed=0)
    heldout = arithmetic_prompts("heldout", 500, seed=0)
    assert len(set(train)) == 2000 and len(set(heldout)) == 500
    assert not set(train) & set(heldout)
    assert all(split_of(p) == "train" for p in train) and all(split_of(p) == "heldout" for p in heldout)
    assert arithmetic_prompts("heldout", 50, seed=3) == arithmetic_prompts("heldout", 50, seed=3)
    assert arithmetic_prompts("heldout", 50, seed=3) != arithmetic_prompts("heldout", 50, seed=4)
    assert 0.4 < sum("+" in p for p in train) / len(train) < 0.6  # both operations
    assert all(not answer(p).startswith("-") for p in train)  # subtraction never goes below zero
    grid = [f"{a}+{b}=" for a in range(10, 210) for b in range(10, 60)]
    assert 0.08 < sum(split_of(p) == "heldout" for p in grid) / len(grid) < 0.12  # about one in ten held out


def test_bad_split_and_count():
    with pytest.raises(InvalidInputError, match="split: 'test' is not one of"):
        arithmetic_prompts("test", 3)
    with pytest.raises(InvalidInputError, match="count: must be a non-negative int"):
        arithmetic_prompts("train", -1)


def test_near_misses_are_wrong_plausible_and_never_negative():
    rng = np.random.default_rng(0)
    for correct in ["0", "7", "10", "168", "1000", "425"]:
        misses = {near_miss(correct, rng) for _ in range(50)}
        assert correct not in misses and len(misses) >= 2  # "0" has only "1" and "9"
        assert all(m.isdigit() and abs(len(m) - len(correct)) <= 1 for m in misses), misses
