"""The caption grammar of the shapes world: GenEval's categories in miniature.

=====================  ==========================================
category               caption
=====================  ==========================================
single_object          a circle
colour                 a red circle
counting               three red circles            (one..four)
two_object             a circle and a square
position               a red circle left of a blue square
                       (left of, right of, above, below)
colour_attribution     a red circle and a blue square
=====================  ==========================================

Held-out prompts are combinations never seen in training: every prompt that names a held-out
colour–shape pair (:data:`HELD_OUT_PAIRS`, which no training image shows either), plus the
counting, two-object, position and attribution prompts all of whose paraphrases fall in a fixed
fifth chosen by a hash of the caption. A paraphrase says the same thing another way ("a square and
a circle", "a blue square right of a red circle", "one red circle" for "a red circle"), so no
held-out prompt has a paraphrase in training. The three single-object and the six two-object
prompts (three shape pairs) are too few to hold out: both splits share them, so that held-out
reports still cover every category.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

from ..errors import InvalidInputError

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
RELATIONS = ("left of", "right of", "above", "below")
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
CATEGORIES = ("single_object", "colour", "counting", "two_object", "position", "colour_attribution")
SPLITS = ("train", "heldout")
HELD_OUT_PAIRS = frozenset({("blue", "triangle"), ("yellow", "circle")})
HELD_OUT_FRACTION = 5  # one prompt in five of the combinational categories
SHARED_CATEGORIES = ("single_object", "two_object")  # too few prompts to hold any out


@dataclass(frozen=True)
class Thing:
    """A noun phrase of a caption: ``count`` × ``colour`` ``shape`` (colour None: any colour)."""

    shape: str
    colour: str | None = None
    count: int = 1

    def phrase(self, counted: bool = False) -> str:
        """"a red circle", or with ``counted`` "one red circle", "three red circles"."""
        words = " ".join([self.colour, self.shape] if self.colour else [self.shape])
        if not counted:
            return f"a {words}"
        return f"{COUNT_WORDS[self.count]} {words}" + ("s" if self.count > 1 else "")


@dataclass(frozen=True)
class Prompt:
    """A parsed caption: its category, the things it names and, for position, the relation."""

    category: str
    things: tuple[Thing, ...]
    relation: str | None = None

    @property
    def text(self) -> str:
        if self.category == "position":
            return f"{self.things[0].phrase()} {self.relation} {self.things[1].phrase()}"
        if self.category == "counting":
            return self.things[0].phrase(counted=True)
        return " and ".join(thing.phrase() for thing in self.things)

    def pairs(self) -> set[tuple[str, str]]:
        return {(t.colour, t.shape) for t in self.things if t.colour}

    def paraphrases(self) -> list[Prompt]:
        """This prompt and the captions that mean the same (the things swapped, the relation
        inverted, a count of one said as "a")."""
        inverse = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
        variants = [self]
        if self.category == "position":
            variants.append(Prompt("position", self.things[::-1], inverse[self.relation]))
        elif len(self.things) == 2:
            variants.append(Prompt(self.category, self.things[::-1]))
        elif self.category == "counting" and self.things[0].count == 1:
            variants.append(Prompt("colour", self.things))
        return variants

    def _hashed_out(self) -> bool:
        if self.category in ("single_object", "colour", *SHARED_CATEGORIES):
            return False
        return int(hashlib.sha256(self.text.encode()).hexdigest(), 16) % HELD_OUT_FRACTION == 0

    @property
    def split(self) -> str:
        """"heldout" for unseen combinations, else "train" (single objects count as train)."""
        if self.pairs() & HELD_OUT_PAIRS:
            return "heldout"
        return "heldout" if all(p._hashed_out() for p in self.paraphrases()) else "train"


def _thing(colour: str | None, shape: str, count: int = 1) -> Thing:
    return Thing(shape=shape, colour=colour, count=count)


@lru_cache(maxsize=1)
def all_prompts() -> dict[str, tuple[Prompt, ...]]:
    """Every caption of the grammar, per category."""
    coloured = [(c, s) for s in SHAPES for c in COLOURS]
    prompts = {
        "single_object": [Prompt("single_object", (_thing(None, s),)) for s in SHAPES],
        "colour": [Prompt("colour", (_thing(c, s),)) for c, s in coloured],
        "counting": [Prompt("counting", (_thing(c, s, n),)) for n in COUNT_WORDS for c, s in coloured],
        "two_object": [Prompt("two_object", (_thing(None, a), _thing(None, b))) for a in SHAPES for b in SHAPES if a != b],
        "position": [
            Prompt("position", (_thing(*first), _thing(*second)), relation)
            for first in coloured for second in coloured if first != second for relation in RELATIONS
        ],
        "colour_attribution": [
            Prompt("colour_attribution", (_thing(*first), _thing(*second)))
            for first in coloured for second in coloured if first[0] != second[0] and first[1] != second[1]
        ],
    }
    return {category: tuple(items) for category, items in prompts.items()}


def prompts_for(split: str, category: str | None = None) -> tuple[Prompt, ...]:
    """The prompts of ``split`` ("train" or "heldout"), of one category or all."""
    if split not in SPLITS:
        raise InvalidInputError(f"split: {split!r} is not one of {SPLITS}.")
    if category is not None and category not in CATEGORIES:
        raise InvalidInputError(f"category: {category!r} is not one of {CATEGORIES}.")
    categories = [category] if category else CATEGORIES
    return tuple(
        p for c in categories for p in all_prompts()[c] if p.split == split or p.category in SHARED_CATEGORIES
    )


_COLOUR = "|".join(COLOURS)
_SHAPE = "|".join(SHAPES)
_A_THING = rf"a (?:(?P<{{c}}>{_COLOUR}) )?(?P<{{s}}>{_SHAPE})"
_COUNTED = rf"(?P<n>{'|'.join(COUNT_WORDS.values())}) (?P<c1>{_COLOUR}) (?P<s1>{_SHAPE})(?P<plural>s?)"
_PATTERNS = (
    ("counting", re.compile(rf"^{_COUNTED}$")),
    ("position", re.compile(rf"^{_A_THING.format(c='c1', s='s1')} (?P<rel>{'|'.join(RELATIONS)}) {_A_THING.format(c='c2', s='s2')}$")),
    ("pair", re.compile(rf"^{_A_THING.format(c='c1', s='s1')} and {_A_THING.format(c='c2', s='s2')}$")),
    ("single", re.compile(rf"^{_A_THING.format(c='c1', s='s1')}$")),
)
GRAMMAR_HELP = (
    "ShapesEval judges captions of the form: 'a circle'; 'a red circle'; 'three red circles' (one..four); "
    "'a circle and a square'; 'a red circle left of a blue square' (left of, right of, above, below); "
    f"'a red circle and a blue square'. Colours: {', '.join(COLOURS)}. Shapes: {', '.join(SHAPES)}."
)


class UnjudgeablePromptError(InvalidInputError):
    """A caption outside the grammar: the message says which part and lists the grammar."""


def _normalise(text: str) -> str:
    text = re.sub(r"\s+", " ", text.strip().lower()).rstrip(".")
    return re.sub(r"^(a photo of|an image of|a picture of) ", "", text)


def parse_prompt(text: str) -> Prompt:
    """The :class:`Prompt` a caption means, or :class:`UnjudgeablePromptError`."""
    if not isinstance(text, str):
        raise UnjudgeablePromptError(f"prompt: expected a string, got {type(text).__name__}.")
    caption = _normalise(text)
    for kind, pattern in _PATTERNS:
        match = pattern.match(caption)
        if not match:
            continue
        groups = match.groupdict()
        first = (groups.get("c1"), groups["s1"])
        if kind == "counting":
            count = next(n for n, word in COUNT_WORDS.items() if word == groups["n"])
            if (count > 1) != bool(groups["plural"]):
                break  # "one red circles", "three red circle"
            return Prompt("counting", (_thing(*first, count),))
        if kind == "single":
            return Prompt("colour" if first[0] else "single_object", (_thing(*first),))
        second = (groups.get("c2"), groups["s2"])
        if kind == "position":
            if not (first[0] and second[0]):
                break
            return Prompt("position", (_thing(*first), _thing(*second)), groups["rel"])
        if first[0] and second[0]:
            return Prompt("colour_attribution", (_thing(*first), _thing(*second)))
        if not first[0] and not second[0]:
            return Prompt("two_object", (_thing(None, first[1]), _thing(None, second[1])))
        break
    unknown = [w for w in re.findall(r"[a-z]+", caption)
               if w not in {*COLOURS, *SHAPES, *(s + "s" for s in SHAPES), *COUNT_WORDS.values(),
                            "a", "an", "and", "left", "right", "of", "above", "below"}]
    part = f"the word(s) {unknown}" if unknown else "its structure"
    raise UnjudgeablePromptError(f"prompt {text!r}: cannot judge {part}. {GRAMMAR_HELP}")


def hard_negatives(prompt: Prompt, rng) -> list[Prompt]:
    """Captions one edit away from ``prompt`` that the same image does not satisfy: another
    colour, another shape, another count, the opposite relation or the things swapped."""
    negatives = []
    for index, thing in enumerate(prompt.things):
        if thing.colour:
            colour = rng.choice([c for c in COLOURS if c != thing.colour])
            negatives.append(_with_thing(prompt, index, Thing(thing.shape, str(colour), thing.count)))
        shape = rng.choice([s for s in SHAPES if s != thing.shape])
        negatives.append(_with_thing(prompt, index, Thing(str(shape), thing.colour, thing.count)))
    if prompt.category == "counting":
        count = rng.choice([n for n in COUNT_WORDS if n != prompt.things[0].count])
        negatives.append(_with_thing(prompt, 0, Thing(prompt.things[0].shape, prompt.things[0].colour, int(count))))
    if prompt.category == "position":
        opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
        negatives.append(Prompt("position", prompt.things, opposite[prompt.relation]))
        negatives.append(Prompt("position", prompt.things[::-1], prompt.relation))
    if prompt.category == "colour_attribution":  # the colours swapped between the two shapes
        first, second = prompt.things
        negatives.append(Prompt(prompt.category, (Thing(first.shape, second.colour), Thing(second.shape, first.colour))))
    return [n for n in negatives if n.text != prompt.text and _valid(n)]


def _with_thing(prompt: Prompt, index: int, thing: Thing) -> Prompt:
    things = list(prompt.things)
    things[index] = thing
    return Prompt(prompt.category, tuple(things), prompt.relation)


def _valid(prompt: Prompt) -> bool:
    """Two-thing prompts need two different things (and attribution two colours and two shapes)."""
    if len(prompt.things) < 2:
        return True
    first, second = prompt.things
    if prompt.category == "colour_attribution":
        return first.colour != second.colour and first.shape != second.shape
    if prompt.category == "two_object":
        return first.shape != second.shape
    return first != second
