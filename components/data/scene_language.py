"""The language of the synthetic scenes: vocabulary, reference captions, parser.

Shared by the generator (``components.data.synthetic``), which writes the
reference captions, and by evaluation, which parses generated captions back
into objects and relations and scores them against the true scene.

A scene is 1-3 :class:`SceneObject` (shape, colour, size, centre). Captions are
lower-case words with no punctuation (already in the form ``prepare``
normalizes to), at most 17 words long.

Canonical phrasing (:func:`canonical_caption`), a deterministic function of
what the image shows:

* one object: ``a small red circle``
* two objects, related along the dominant axis of their centres, the left or
  upper one first: ``a small red circle to the left of a large blue square``
  or ``a small red circle above a large blue square``
* three objects, listed left to right:
  ``a small red circle a large blue square and a small green triangle from
  left to right``

:func:`reference_captions` gives two copies of the canonical caption (so it is
the most frequent phrasing, which a captioner learns to produce and BLEU
rewards) and three variations from a few templates per object count: the
inverse relation (``to the right of``, ``below``), counts (``two shapes ...``,
``three small red circles``), ``there is``, ``a picture of``, with synonyms
(:data:`SIZE_SYNONYMS`, :data:`COLOUR_SYNONYMS`, :data:`SHAPE_SYNONYMS`,
:data:`RELATION_SYNONYMS`) drawn at random.

:func:`parse_caption` reads any such caption, and free text around it, back into
objects and relations; :func:`score_caption` and :func:`names_all_objects`
compare the result with the true objects.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

# ----------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "yellow", "green", "blue", "purple", "white")
SIZES = ("small", "large")
RELATIONS = ("left_of", "right_of", "above", "below")
MAX_OBJECTS = 3  # the templates keep every caption <= 17 words (prepare cuts at 20)

# Canonical word -> the synonyms a reference caption may use instead of it.
SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {"circle": ("disc",), "square": ("box",)}
COLOUR_SYNONYMS: dict[str, tuple[str, ...]] = {"purple": ("violet",)}
SIZE_SYNONYMS: dict[str, tuple[str, ...]] = {"small": ("little",), "large": ("big",)}

PLURALS = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "cross": "crosses",
    "disc": "discs",
    "box": "boxes",
}

# Relation name -> the phrase canonical captions use, and its synonyms.
RELATION_PHRASES = {
    "left_of": "to the left of",
    "right_of": "to the right of",
    "above": "above",
    "below": "below",
}
RELATION_SYNONYMS: dict[str, tuple[str, ...]] = {
    "left_of": ("left of",),
    "right_of": ("right of",),
    "above": ("over",),
    "below": ("under",),
}
INVERSE_RELATION = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above"}
# An ordering phrase relates every listed object to the next one.
ORDER_PHRASES = {
    "left_of": "from left to right",
    "right_of": "from right to left",
    "above": "from top to bottom",
    "below": "from bottom to top",
}

COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six")  # index = number
GENERIC_NOUNS = ("shape", "shapes", "object", "objects", "thing", "things", "item", "items")


# ----------------------------------------------------------------------------
# Scenes and their canonical description
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One object of a synthetic scene.

    Attributes:
        shape: One of :data:`SHAPES`.
        colour: One of :data:`COLOURS`.
        size: One of :data:`SIZES`.
        x: Centre, as a fraction of the image width (0 = left edge).
        y: Centre, as a fraction of the image height (0 = top edge; grows downward).
    """

    shape: str
    colour: str
    size: str
    x: float
    y: float

    @property
    def key(self) -> tuple[str, str, str]:
        """``(size, colour, shape)``: what a caption says about the object."""
        return (self.size, self.colour, self.shape)


def spatial_relation(a: SceneObject, b: SceneObject) -> str:
    """The relation of ``a`` to ``b`` along the dominant axis of their centres.

    Args:
        a: The subject (``a`` is ... of ``b``).
        b: The reference object.

    Returns:
        str: ``left_of`` / ``right_of`` if the horizontal distance is the larger
        (ties go horizontal), else ``above`` / ``below``.
    """
    dx, dy = b.x - a.x, b.y - a.y
    if abs(dx) >= abs(dy):
        return "left_of" if dx > 0 else "right_of"
    return "above" if dy > 0 else "below"  # y grows downward


def relation_holds(a: SceneObject, relation: str, b: SceneObject) -> bool:
    """Whether ``a <relation> b`` is true of the centres (along that axis only).

    A circle up and to the left of a square is both ``left_of`` and ``above``
    it, whichever axis dominates.
    """
    if relation == "left_of":
        return a.x < b.x
    if relation == "right_of":
        return a.x > b.x
    if relation == "above":
        return a.y < b.y
    if relation == "below":
        return a.y > b.y
    raise ValueError(f"unknown relation {relation!r}; expected one of {RELATIONS}")


def _left_to_right(objects: Sequence[SceneObject]) -> list[int]:
    """Indices of ``objects`` sorted by centre x (stable)."""
    return sorted(range(len(objects)), key=lambda i: objects[i].x)


def _dominant_pair(objects: Sequence[SceneObject], i: int, j: int) -> tuple[int, str, int]:
    """``(first, relation, second)`` for two objects, phrased as ``left_of`` or ``above``."""
    relation = spatial_relation(objects[i], objects[j])
    if relation in ("right_of", "below"):
        return (j, INVERSE_RELATION[relation], i)
    return (i, relation, j)


def canonical_relations(objects: Sequence[SceneObject]) -> list[tuple[int, str, int]]:
    """The relations :func:`canonical_caption` states, as indices into ``objects``.

    Two objects: their dominant-axis relation. Three or more: each object is
    ``left_of`` the next one in left-to-right order.
    """
    if len(objects) < 2:
        return []
    order = _left_to_right(objects)
    if len(objects) == 2:
        return [_dominant_pair(objects, order[0], order[1])]
    return [(order[k], "left_of", order[k + 1]) for k in range(len(order) - 1)]


def _words(obj: SceneObject, rng: np.random.Generator | None = None, *, plural: bool = False) -> str:
    """``"small red circle"``; with ``rng``, each word is a synonym half of the time."""

    def pick(word: str, table: dict[str, tuple[str, ...]]) -> str:
        synonyms = table.get(word, ())
        if rng is None or not synonyms or rng.random() < 0.5:
            return word
        return synonyms[int(rng.integers(len(synonyms)))]

    shape = pick(obj.shape, SHAPE_SYNONYMS)
    if plural:
        shape = PLURALS[shape]
    return f"{pick(obj.size, SIZE_SYNONYMS)} {pick(obj.colour, COLOUR_SYNONYMS)} {shape}"


def describe(obj: SceneObject) -> str:
    """The canonical noun phrase of one object, e.g. ``"a small red circle"``."""
    return f"a {_words(obj)}"


def _join(phrases: Sequence[str]) -> str:
    """``"p1"``, ``"p1 and p2"``, ``"p1 p2 and p3"`` (no commas: captions have no punctuation)."""
    if len(phrases) == 1:
        return phrases[0]
    return " ".join(phrases[:-1]) + " and " + phrases[-1]


def _relation_phrase(relation: str, rng: np.random.Generator | None = None) -> str:
    """The words for ``relation``; with ``rng``, a synonym half of the time."""
    if rng is not None and rng.random() < 0.5:
        return RELATION_SYNONYMS[relation][0]
    return RELATION_PHRASES[relation]


def canonical_caption(objects: Sequence[SceneObject]) -> str:
    """The canonical caption of a scene (see the module docstring).

    Args:
        objects: The scene, 1 to :data:`MAX_OBJECTS` objects, in any order.

    Returns:
        str: e.g. ``"a small red circle to the left of a large blue square"``.
    """
    if not objects:
        raise ValueError("a scene has at least one object")
    if len(objects) == 1:
        return describe(objects[0])
    if len(objects) == 2:
        ((first, relation, second),) = canonical_relations(objects)
        return f"{describe(objects[first])} {RELATION_PHRASES[relation]} {describe(objects[second])}"
    listed = _join([describe(objects[i]) for i in _left_to_right(objects)])
    return f"{listed} {ORDER_PHRASES['left_of']}"


# ----------------------------------------------------------------------------
# Variation templates. Each takes the objects in left-to-right order and an RNG
# (for synonyms) and returns one caption.
# ----------------------------------------------------------------------------

Template = Callable[[Sequence[SceneObject], np.random.Generator], str]


def _a(obj: SceneObject, rng: np.random.Generator) -> str:
    return f"a {_words(obj, rng)}"


def _counted(objs: Sequence[SceneObject], rng: np.random.Generator) -> str:
    """``"two shapes a ... and a ..."``, or grouped: ``"two small red circles and a ..."``."""
    groups: dict[tuple[str, str, str], list[SceneObject]] = {}
    for obj in objs:
        groups.setdefault(obj.key, []).append(obj)
    if all(len(g) == 1 for g in groups.values()):
        return f"{COUNT_WORDS[len(objs)]} shapes {_join([_a(o, rng) for o in objs])}"
    parts = [
        _a(g[0], rng) if len(g) == 1 else f"{COUNT_WORDS[len(g)]} {_words(g[0], rng, plural=True)}"
        for g in groups.values()
    ]
    return _join(parts)


def _related_pair(objs: Sequence[SceneObject], rng: np.random.Generator, *, inverse: bool = False) -> str:
    """The first two objects joined by their dominant relation (or its inverse)."""
    first, relation, second = _dominant_pair(objs, 0, 1)
    if inverse:
        first, relation, second = second, INVERSE_RELATION[relation], first
    return f"{_a(objs[first], rng)} {_relation_phrase(relation, rng)} {_a(objs[second], rng)}"


ONE_OBJECT_TEMPLATES: tuple[Template, ...] = (
    lambda objs, rng: f"there is {_a(objs[0], rng)}",
    lambda objs, rng: f"a single {_words(objs[0], rng)}",
    lambda objs, rng: f"one {_words(objs[0], rng)}",
    lambda objs, rng: f"a picture of {_a(objs[0], rng)}",
)
TWO_OBJECT_TEMPLATES: tuple[Template, ...] = (
    lambda objs, rng: _related_pair(objs, rng, inverse=True),
    lambda objs, rng: f"there is {_related_pair(objs, rng)}",
    _counted,
    lambda objs, rng: f"a picture of {_join([_a(o, rng) for o in objs])}",
)
MANY_OBJECT_TEMPLATES: tuple[Template, ...] = (
    _counted,
    lambda objs, rng: f"{ORDER_PHRASES['left_of']} {_join([_a(o, rng) for o in objs])}",
    lambda objs, rng: f"{_related_pair(objs, rng)} and {_join([_a(o, rng) for o in objs[2:]])}",
    lambda objs, rng: f"a picture of {_join([_a(o, rng) for o in objs])}",
)


def reference_captions(
    objects: Sequence[SceneObject],
    rng: np.random.Generator,
    n: int = 5,
    *,
    canonical_copies: int = 2,
) -> list[str]:
    """``n`` reference captions for a scene: the canonical one first, then variations.

    Args:
        objects: The scene, 1 to :data:`MAX_OBJECTS` objects.
        rng: Source of the template and synonym choices.
        n: How many captions.
        canonical_copies: How many of them are the canonical caption, verbatim
            (at most ``n``). Repeating it makes it the dominant phrasing.

    Returns:
        list[str]: ``n`` captions; the variations use distinct templates while
        there are enough of them.
    """
    if not 1 <= len(objects) <= MAX_OBJECTS:
        raise ValueError(f"a scene has 1 to {MAX_OBJECTS} objects, got {len(objects)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ordered = [objects[i] for i in _left_to_right(objects)]
    templates = {1: ONE_OBJECT_TEMPLATES, 2: TWO_OBJECT_TEMPLATES}.get(len(ordered), MANY_OBJECT_TEMPLATES)
    copies = min(max(canonical_copies, 0), n)
    n_varied = n - copies
    picks = rng.choice(len(templates), size=n_varied, replace=n_varied > len(templates))
    return [canonical_caption(objects)] * copies + [templates[int(k)](ordered, rng) for k in picks]


# ----------------------------------------------------------------------------
# Parser
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ParsedObject:
    """An object as a caption names it; ``None`` where the caption does not say."""

    size: str | None
    colour: str | None
    shape: str | None

    @property
    def key(self) -> tuple[str | None, str | None, str | None]:
        return (self.size, self.colour, self.shape)


@dataclasses.dataclass(frozen=True)
class ParsedCaption:
    """What a caption claims about a scene.

    Attributes:
        objects: The objects named, in the order the caption names them
            (``"two red circles"`` gives two).
        relations: ``(i, relation, j)``: ``objects[i]`` is ``relation`` (one of
            :data:`RELATIONS`) of ``objects[j]``.
        count: A stated total (``"three shapes"``), or ``None``.
    """

    objects: tuple[ParsedObject, ...]
    relations: tuple[tuple[int, str, int], ...]
    count: int | None = None


def _lookup(canonical: Sequence[str], synonyms: dict[str, tuple[str, ...]]) -> dict[str, str]:
    table = {word: word for word in canonical}
    for word, alternatives in synonyms.items():
        table.update({alt: word for alt in alternatives})
    return table


_SIZE_WORDS = _lookup(SIZES, SIZE_SYNONYMS)
_COLOUR_WORDS = _lookup(COLOURS, COLOUR_SYNONYMS)
_SHAPE_WORDS = _lookup(SHAPES, SHAPE_SYNONYMS)  # singular word -> canonical shape
_PLURAL_SHAPE_WORDS = {PLURALS[w]: shape for w, shape in _SHAPE_WORDS.items()}
_NUMBERS = {word: n for n, word in enumerate(COUNT_WORDS)} | {"a": 1, "an": 1, "single": 1}
_DETERMINERS = ("the", "another")  # start a new object without stating a count

# Multi-word phrases, matched longest first: (tokens) -> ("relation" | "order", relation).
_PHRASES: dict[tuple[str, ...], tuple[str, str]] = {}
for _rel in RELATIONS:
    for _text in (RELATION_PHRASES[_rel], *RELATION_SYNONYMS[_rel]):
        _PHRASES[tuple(_text.split())] = ("relation", _rel)
    _PHRASES[tuple(ORDER_PHRASES[_rel].split())] = ("order", _rel)
    _PHRASES[tuple(ORDER_PHRASES[_rel].split()[1:])] = ("order", _rel)  # "left to right"
_PHRASES |= {
    ("on", "the", "left", "of"): ("relation", "left_of"),
    ("on", "the", "right", "of"): ("relation", "right_of"),
    ("beneath",): ("relation", "below"),
}
_PHRASE_LENGTHS = sorted({len(p) for p in _PHRASES}, reverse=True)
_TOKEN = re.compile(r"[a-z]+|[0-9]+")


def _match_phrase(tokens: Sequence[str], i: int) -> tuple[int, str, str] | None:
    """The longest phrase starting at ``tokens[i]``: ``(length, kind, relation)``."""
    for length in _PHRASE_LENGTHS:
        phrase = _PHRASES.get(tuple(tokens[i : i + length]))
        if phrase is not None:
            return (length, *phrase)
    return None


def parse_caption(text: str) -> ParsedCaption:
    """Read the objects and relations a caption states.

    Robust to case, punctuation, synonyms and words it does not know (they are
    skipped). A run ``[count|a|the] [size] [colour] shape`` is one object, or
    ``count`` objects (``"two blue squares"``; a bare plural counts as two).
    Size and colour without a shape still make an object, with ``shape=None``.
    A relation phrase between two objects relates them; an ordering phrase
    (``"from left to right"``) relates every object to the next one named.
    ``"three shapes"`` states a count and names no object.

    Args:
        text: Any caption.

    Returns:
        ParsedCaption: Objects in the order named; garbage gives no objects.
    """
    tokens = _TOKEN.findall(text.lower())
    objects: list[ParsedObject] = []
    relations: list[tuple[int, str, int]] = []
    order: str | None = None
    stated_count: int | None = None
    # the object being read: count, size, colour seen so far
    count: int | None = None
    size: str | None = None
    colour: str | None = None
    open_relation: tuple[int, str] | None = None  # (subject index, relation) awaiting its object

    def emit(shape: str | None, n: int) -> None:
        nonlocal count, size, colour, open_relation
        first = len(objects)
        objects.extend(ParsedObject(size=size, colour=colour, shape=shape) for _ in range(n))
        if open_relation is not None:
            relations.append((open_relation[0], open_relation[1], first))
            open_relation = None
        count = size = colour = None

    def flush() -> None:
        """End the current object: size/colour without a shape still name one."""
        nonlocal count
        if size is not None or colour is not None:
            emit(None, count or 1)
        count = None

    i = 0
    while i < len(tokens):
        phrase = _match_phrase(tokens, i)
        if phrase is not None:
            length, kind, relation = phrase
            flush()
            if kind == "order":
                order = relation
            elif objects:
                open_relation = (len(objects) - 1, relation)
            i += length
            continue
        token = tokens[i]
        i += 1
        if token in _NUMBERS or token.isdigit():
            n = int(token) if token.isdigit() else _NUMBERS[token]
            if token == "single" and count is not None and size is None and colour is None:
                continue  # "a single red circle": one object, not two
            flush()
            count = n
        elif token in _DETERMINERS or token == "and":
            flush()
        elif token in _SIZE_WORDS:
            if size is not None:
                flush()
            size = _SIZE_WORDS[token]
        elif token in _COLOUR_WORDS:
            if colour is not None:
                flush()
            colour = _COLOUR_WORDS[token]
        elif token in _SHAPE_WORDS:
            emit(_SHAPE_WORDS[token], count or 1)
        elif token in _PLURAL_SHAPE_WORDS:
            emit(_PLURAL_SHAPE_WORDS[token], count or 2)
        elif token in GENERIC_NOUNS:
            if size is not None or colour is not None:
                emit(None, count or (2 if token.endswith("s") else 1))
            else:
                if count is not None and token.endswith("s"):
                    stated_count = count  # "three shapes"
                count = None
        # any other word is skipped
    flush()

    if order is not None:
        relations.extend((k, order, k + 1) for k in range(len(objects) - 1))
    unique = tuple(dict.fromkeys(relations))  # drop repeats, keep order
    return ParsedCaption(objects=tuple(objects), relations=unique, count=stated_count)


# ----------------------------------------------------------------------------
# Scoring against the true scene
# ----------------------------------------------------------------------------


def _fits(parsed: ParsedObject, obj: SceneObject) -> bool:
    """Every attribute the caption states about ``parsed`` is true of ``obj``."""
    return all(p is None or p == t for p, t in zip(parsed.key, obj.key))


def score_caption(parsed: ParsedCaption, truth: Sequence[SceneObject]) -> dict:
    """Compare a parsed caption with the true objects of its image.

    Objects: parsed ``(size, colour, shape)`` triples are matched to the true
    ones as multisets; an object with a missing attribute never matches.

    Relations: a stated relation is true (``relations_tp``) when some pair of
    distinct true objects fitting its two parsed objects (fitting = no stated
    attribute contradicts) satisfies it (:func:`relation_holds`); otherwise,
    also when an object cannot be found in the scene, it is a
    ``relations_fp``. ``relations_fn`` counts the relations the canonical
    caption states (:func:`canonical_relations`) whose pair of objects no true
    stated relation covers, in either direction.

    Args:
        parsed: Output of :func:`parse_caption`.
        truth: The scene's true objects.

    Returns:
        dict: ``objects_tp``, ``objects_fp``, ``objects_fn`` (int); ``exact``
        (bool: every true object named with its size, colour and shape, and no
        other object); ``relations_tp``, ``relations_fp``, ``relations_fn``
        (int); ``count_correct`` (bool, or ``None`` when no count is stated).
    """
    truth_keys = Counter(obj.key for obj in truth)
    parsed_keys = Counter(obj.key for obj in parsed.objects)
    tp = sum((truth_keys & parsed_keys).values())
    fp, fn = len(parsed.objects) - tp, len(truth) - tp

    rel_tp = rel_fp = 0
    covered: set[frozenset[int]] = set()
    for i, relation, j in parsed.relations:
        left = [a for a, obj in enumerate(truth) if _fits(parsed.objects[i], obj)]
        right = [b for b, obj in enumerate(truth) if _fits(parsed.objects[j], obj)]
        witnesses = [
            frozenset((a, b)) for a in left for b in right if a != b and relation_holds(truth[a], relation, truth[b])
        ]
        if witnesses:
            rel_tp += 1
            covered.update(witnesses)
        else:
            rel_fp += 1
    rel_fn = sum(frozenset((a, b)) not in covered for a, _, b in canonical_relations(truth))

    return {
        "objects_tp": tp,
        "objects_fp": fp,
        "objects_fn": fn,
        "exact": fp == 0 and fn == 0,
        "relations_tp": rel_tp,
        "relations_fp": rel_fp,
        "relations_fn": rel_fn,
        "count_correct": None if parsed.count is None else parsed.count == len(truth),
    }


def names_all_objects(
    parsed: ParsedCaption,
    truth: Sequence[SceneObject],
    *,
    fields: Sequence[str] = ("colour", "shape"),
) -> bool:
    """Whether every true object is named with the right ``fields``.

    Matching is by multiset (two red circles must both be named); extra
    parsed objects are allowed.

    Args:
        parsed: Output of :func:`parse_caption`.
        truth: The scene's true objects.
        fields: Attributes that must match, among ``size``, ``colour``, ``shape``.

    Returns:
        bool: ``True`` if no true object is left unnamed.
    """
    unknown = set(fields) - {"size", "colour", "shape"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; use size, colour, shape")
    wanted = Counter(tuple(getattr(obj, f) for f in fields) for obj in truth)
    named = Counter(tuple(getattr(obj, f) for f in fields) for obj in parsed.objects)
    return not (wanted - named)
