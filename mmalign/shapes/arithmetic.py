"""The text path's task: 2–3 digit addition and subtraction, whose answers can be checked exactly.

A prompt is ``"123+45="`` or ``"512-87="``: a 2–3 digit number, then a 2-digit one; its answer is
``"168"`` or ``"425"``. Subtraction never goes below zero (the larger operand comes first), so every
answer is a plain digit string. A 2-digit second operand keeps the digits a tiny model must line up
at fixed distances from the "=", which it learns in minutes on a CPU; carries and borrows into the
hundreds still trip it up, which is the room the alignment methods have to gain. (With two
3-digit operands, the same model answered about 1% right after half of a 10-minute run.) Any 1–3 digit operands parse.
The split is fixed by a hash of the prompt, like the image world's held-out pairs: about one
prompt in ten is "heldout", never trained on, and the rest is "train".
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from ..errors import InvalidInputError

SPLITS = ("train", "heldout")
HELDOUT_EVERY = 10  # crc32(prompt) % 10 == 0 is held out: about 10% of the ~178k prompts
FIRST_OPERAND = (10, 999)  # two or three digits
SECOND_OPERAND = (10, 99)  # two digits
PROMPT = re.compile(r"^\s*(\d{1,3})\s*([+-])\s*(\d{1,3})\s*=\s*$")


def split_of(prompt: str) -> str:
    """"heldout" or "train": fixed by the prompt's text, so the splits never share a prompt."""
    return "heldout" if zlib.crc32(prompt.encode()) % HELDOUT_EVERY == 0 else "train"


def format_prompt(left: int, operator: str, right: int) -> str:
    return f"{left}{operator}{right}="


def random_prompt(rng: np.random.Generator) -> str:
    """One prompt drawn uniformly: operands from their ranges, "+" or "-" with equal odds."""
    left = int(rng.integers(FIRST_OPERAND[0], FIRST_OPERAND[1] + 1))
    right = int(rng.integers(SECOND_OPERAND[0], SECOND_OPERAND[1] + 1))
    operator = "+" if rng.random() < 0.5 else "-"
    if operator == "-" and right > left:
        left, right = right, left
    return format_prompt(left, operator, right)


def arithmetic_prompts(split: str = "train", count: int = 64, seed: int = 0) -> list[str]:
    """``count`` distinct prompts of ``split``, half additions and half subtractions, drawn with ``seed``."""
    if split not in SPLITS:
        raise InvalidInputError(f"split: {split!r} is not one of {SPLITS}.")
    if not isinstance(count, int) or count < 0:
        raise InvalidInputError(f"count: must be a non-negative int, got {count!r}.")
    rng = np.random.default_rng(seed)
    prompts: dict[str, None] = {}  # an ordered set
    while len(prompts) < count:
        prompt = random_prompt(rng)
        if split_of(prompt) == split:
            prompts[prompt] = None
    return list(prompts)


def parse(prompt: str) -> tuple[int, str, int] | None:
    """``(left, operator, right)`` of an arithmetic prompt, or None for any other text."""
    match = PROMPT.match(prompt) if isinstance(prompt, str) else None
    if match is None:
        return None
    return int(match.group(1)), match.group(2), int(match.group(3))


def is_arithmetic(prompt: str) -> bool:
    return parse(prompt) is not None


def answer(prompt: str) -> str:
    """The exact answer of an arithmetic prompt, as digits: ``answer("123+45=") == "168"``."""
    parsed = parse(prompt)
    if parsed is None:
        raise InvalidInputError(
            f"prompt: {prompt!r} is not an arithmetic prompt. Fix: pass prompts like '123+45=' "
            "(from mmalign.shapes.arithmetic.arithmetic_prompts)."
        )
    left, operator, right = parsed
    return str(left + right if operator == "+" else left - right)


def extract_answer(completion: str) -> str:
    """What a completion answers: its text up to the first newline, stripped (the tokenizer's
    end-of-sequence token is dropped when the completion is decoded)."""
    if not isinstance(completion, str):
        raise InvalidInputError(f"completion: expected a string, got {type(completion).__name__}.")
    return completion.split("\n", 1)[0].strip()


def is_correct(prompt: str, completion: str) -> bool:
    """Whether ``completion`` states exactly the answer of ``prompt`` ("168", not "0168" or "168.0")."""
    return extract_answer(completion) == answer(prompt)


def near_miss(correct: str, rng: np.random.Generator) -> str:
    """A plausible wrong answer: one digit off by one, a carry dropped or added, two digits swapped,
    or a digit dropped; never the right answer and never negative."""
    for _ in range(20):
        kind = rng.integers(4)
        digits = list(correct)
        if kind == 0:  # one digit off by one
            i = int(rng.integers(len(digits)))
            digits[i] = str((int(digits[i]) + (1 if rng.random() < 0.5 else -1)) % 10)
            wrong = "".join(digits)
        elif kind == 1:  # a carry dropped or added: ±10^k
            wrong = str(int(correct) + int(rng.choice([-1, 1])) * 10 ** int(rng.integers(max(1, len(correct) - 1))))
        elif kind == 2 and len(digits) > 1:  # two adjacent digits swapped
            i = int(rng.integers(len(digits) - 1))
            digits[i], digits[i + 1] = digits[i + 1], digits[i]
            wrong = "".join(digits)
        elif len(digits) > 1:  # a digit dropped
            del digits[int(rng.integers(len(digits)))]
            wrong = "".join(digits)
        else:
            continue
        if wrong != correct and not wrong.startswith("-") and (len(wrong) == 1 or not wrong.startswith("0")):
            return wrong
    return str(int(correct) + 1)
