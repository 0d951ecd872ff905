"""A synthetic translation task with an oracle: two small artificial languages, Aklan and Berun.

It stands in for real machine translation wherever a judge or a policy must be trained and checked on a CPU in
minutes: the reference translation is made by rule, and the oracle knows exactly how many errors a candidate has.

The languages
-------------
* **Aklan** (source) is SVO. A noun phrase is a determiner that marks number (``ka`` singular, ``ri`` plural), an
  optional adjective and a noun; an adverb may close the sentence: ``ri bero mab tapa ka kiro nalu``.
* **Berun** (target) is SOV with the adverb first and adjectives after their noun. It has no determiners: plural
  nouns take the suffix ``-en``, and the verb agrees in number with its subject (``-a`` singular, ``-o`` plural):
  ``kwe taluen ilk besk seko``.
* **One idiom.** Aklan ``tapa ka soru`` ("take the road", no adjective) is Berun ``velomi`` ("depart"), one
  invariable word in the verb slot; the literal ``dran seka`` is wrong.

Lexicon: 12 nouns, 8 verbs, 8 adjectives, 4 adverbs and 2 determiners in Aklan (34 words); 53 word forms in Berun
(plural nouns and agreeing verbs count as forms). That is 87 surface words, the issue's 50-100, with few enough
lemmas that a 1M-parameter model sees each one thousands of times in a few minutes of training.

The oracle
----------
:func:`oracle_errors` is the word-level optimal-string-alignment distance between a candidate and the reference
(substitution, missing word, extra word, or two adjacent words swapped: one error each). :func:`oracle_score` maps
it to the judge scale, 10 - 2 per error, floored at 0. :func:`perturb` makes a candidate with exactly ``k`` errors.
Everything is deterministic given a seed; randomness comes only from the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

SOURCE_LANGUAGE = "Aklan"
"""Name of the source language, as written in the judge and MT prompts."""
TARGET_LANGUAGE = "Berun"
"""Name of the target language, as written in the judge and MT prompts."""

NOUNS: dict[str, str] = {
    "mab": "talu", "kiro": "besk", "pune": "orim", "sadi": "gave", "lom": "nefi", "tiku": "hars",
    "vena": "pilo", "dosa": "kume", "rilo": "wata", "gesu": "fron", "nupa": "zeli", "soru": "dran",
}  # fmt: skip
VERBS: dict[str, str] = {
    "tapa": "sek", "miru": "lon", "bado": "fap", "kelu": "rin", "sona": "mov", "paki": "dul", "fetu": "gar",
    "limo": "hep",
}  # fmt: skip
ADJECTIVES: dict[str, str] = {
    "bero": "ilk", "soma": "anu", "kedi": "ump", "lufa": "esh", "gari": "ovi", "tome": "aul", "pini": "eko",
    "ruda": "iru",
}  # fmt: skip
ADVERBS: dict[str, str] = {"nalu": "kwe", "dimo": "psa", "huta": "tro", "vosi": "blu"}
DETERMINERS: dict[str, bool] = {"ka": False, "ri": True}
"""Aklan determiner -> whether the noun phrase is plural."""

IDIOM_SOURCE = ("tapa", "ka", "soru")
IDIOM_TARGET = "velomi"

PLURAL_NOUN_SUFFIX = "en"
VERB_SUFFIX = {False: "a", True: "o"}

MAX_COUNTED_ERRORS = 5
"""Errors beyond this many do not lower the score further (the score is 0 by then)."""


def noun_form(stem: str, plural: bool) -> str:
    """The Berun noun, with the plural suffix when plural.

    Example:
        >>> noun_form("talu", True), noun_form("talu", False)
        ('taluen', 'talu')
    """
    return stem + PLURAL_NOUN_SUFFIX if plural else stem


def verb_form(stem: str, plural_subject: bool) -> str:
    """The Berun verb, agreeing in number with its subject.

    Example:
        >>> verb_form("sek", True), verb_form("sek", False)
        ('seko', 'seka')
    """
    return stem + VERB_SUFFIX[plural_subject]


def _target_forms_by_class() -> dict[str, list[str]]:
    return {
        "noun": [noun_form(stem, plural) for stem in NOUNS.values() for plural in (False, True)],
        "verb": [verb_form(stem, plural) for stem in VERBS.values() for plural in (False, True)] + [IDIOM_TARGET],
        "adjective": list(ADJECTIVES.values()),
        "adverb": list(ADVERBS.values()),
    }


TARGET_FORMS_BY_CLASS: dict[str, list[str]] = _target_forms_by_class()
TARGET_WORDS: list[str] = [word for forms in TARGET_FORMS_BY_CLASS.values() for word in forms]
"""Every Berun word form (53)."""
_TARGET_WORD_SET = frozenset(TARGET_WORDS)


def berun_text(text: str | None) -> str | None:
    """``text`` stripped, when it is one line of Berun words; else ``None`` (also for ``None``, what an extractor
    returns for an empty completion).

    The miniature's language check, the part a language-ID filter plays in real MT reward pipelines: used as the
    judge reward's translation extractor, it gives byte-level garbage the invalid-completion reward without asking the
    judge, which never saw such text in training and may score it at random.

    Example:
        >>> berun_text(" talu velomi "), berun_text("talu velomi qq"), berun_text("talu\\nvelomi"), berun_text(None)
        ('talu velomi', None, None, None)
    """
    if text is None:
        return None
    stripped = text.strip()
    if not stripped or "\n" in stripped or not set(stripped.split()) <= _TARGET_WORD_SET:
        return None
    return stripped


def berun_words(text: str | None) -> str | None:
    """The Berun words of ``text`` in their order, every other word dropped; ``None`` when there is none.

    The lenient form of :func:`berun_text`: used as the judge reward's extractor, a translation with a garbled word
    is judged on its Berun words instead of getting 0, as the oracle, which reads every word, still credits the right
    ones around the garbage. The judge still sees only Berun.

    Example:
        >>> berun_words("talu qq velomi"), berun_words("talu\\nseko"), berun_words("qq"), berun_words(None)
        ('talu velomi', 'talu seko', None, None)
    """
    words = [word for word in (text or "").split() if word in _TARGET_WORD_SET]
    return " ".join(words) or None


def berun_line_words(text: str | None) -> str | None:
    """:func:`berun_words` of a one-line completion; ``None`` for one written on several lines.

    :func:`berun_words` joins the lines, so a policy that writes one word per line (``"zeli\\nzeli\\nzeli gara"``) is
    judged on a plausible-looking sentence; this form keeps :func:`berun_text`'s one-line rule and its word filter.

    Example:
        >>> berun_line_words("talu qq velomi"), berun_line_words("talu\\nseko"), berun_line_words(" talu \\n")
        ('talu velomi', None, 'talu')
    """
    if text is not None and "\n" in text.strip():
        return None
    return berun_words(text)


SOURCE_WORDS: list[str] = [*NOUNS, *VERBS, *ADJECTIVES, *ADVERBS, *DETERMINERS]
"""Every Aklan word (34)."""
_WORD_CLASS: dict[str, str] = {word: kind for kind, forms in TARGET_FORMS_BY_CLASS.items() for word in forms}
# Number-flipping a form: the agreement error.
_OTHER_NUMBER: dict[str, str] = {}
for _stem in NOUNS.values():
    _OTHER_NUMBER[noun_form(_stem, False)], _OTHER_NUMBER[noun_form(_stem, True)] = (
        noun_form(_stem, True), noun_form(_stem, False))  # fmt: skip
for _stem in VERBS.values():
    _OTHER_NUMBER[verb_form(_stem, False)], _OTHER_NUMBER[verb_form(_stem, True)] = (
        verb_form(_stem, True), verb_form(_stem, False))  # fmt: skip


@dataclass(frozen=True)
class GrammarSettings:
    """How often the optional parts of a sentence appear when sampling (probabilities in 0-1).

    The defaults give source sentences of 5-8 words and Berun references of 3-6 words (about 4.6 on average).
    """

    adjective: float = 0.35
    adverb: float = 0.3
    plural: float = 0.5
    idiom: float = 0.1

    def __post_init__(self) -> None:
        for name in ("adjective", "adverb", "plural", "idiom"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"GrammarSettings.{name} must lie in 0-1, got {value}")


def sample_source(rng: random.Random, settings: GrammarSettings = GrammarSettings()) -> str:
    """One Aklan sentence drawn from the grammar.

    Example:
        >>> sample_source(random.Random(0))
        'ka vena tapa ka soru'
    """
    nouns, verbs, adjectives, adverbs = list(NOUNS), list(VERBS), list(ADJECTIVES), list(ADVERBS)

    def noun_phrase() -> list[str]:
        words = ["ri" if rng.random() < settings.plural else "ka"]
        if rng.random() < settings.adjective:
            words.append(rng.choice(adjectives))
        return [*words, rng.choice(nouns)]

    subject = noun_phrase()
    if rng.random() < settings.idiom:
        words = [*subject, *IDIOM_SOURCE]
    else:
        words = [*subject, rng.choice(verbs), *noun_phrase()]
    if rng.random() < settings.adverb:
        words.append(rng.choice(adverbs))
    return " ".join(words)


def _parse_noun_phrase(words: list[str], position: int, sentence: str) -> tuple[bool, str | None, str, int]:
    def expect(kind: dict, what: str) -> str:
        if position >= len(words) or words[position] not in kind:
            found = words[position] if position < len(words) else "the end"
            raise ValueError(
                f"not an Aklan sentence: expected {what} at word {position + 1}, got {found!r}: {sentence!r}"
            )
        return words[position]

    plural = DETERMINERS[expect(DETERMINERS, "a determiner (ka/ri)")]
    position += 1
    adjective = None
    if position < len(words) and words[position] in ADJECTIVES:
        adjective = words[position]
        position += 1
    noun = expect(NOUNS, "a noun")
    return plural, adjective, noun, position + 1


def translate(source: str) -> str:
    """The reference Berun translation of an Aklan sentence, made by rule.

    Raises ``ValueError`` naming the offending word when ``source`` is not generated by the grammar.

    Example:
        >>> translate("ri bero mab tapa ka kiro nalu")
        'kwe taluen ilk besk seko'
        >>> translate("ka mab tapa ka soru")
        'talu velomi'
    """
    words = source.split()
    plural, adjective, noun, position = _parse_noun_phrase(words, 0, source)
    subject = [noun_form(NOUNS[noun], plural)] + ([ADJECTIVES[adjective]] if adjective else [])
    if position >= len(words) or words[position] not in VERBS:
        found = words[position] if position < len(words) else "the end"
        raise ValueError(f"not an Aklan sentence: expected a verb at word {position + 1}, got {found!r}: {source!r}")
    verb = words[position]
    if tuple(words[position : position + 3]) == IDIOM_SOURCE and (
        position + 3 == len(words) or words[position + 3] in ADVERBS
    ):
        middle = [IDIOM_TARGET]
        position += 3
    else:
        obj_plural, obj_adjective, obj_noun, position = _parse_noun_phrase(words, position + 1, source)
        obj = [noun_form(NOUNS[obj_noun], obj_plural)] + ([ADJECTIVES[obj_adjective]] if obj_adjective else [])
        middle = [*obj, verb_form(VERBS[verb], plural)]
    adverb: list[str] = []
    if position < len(words):
        if words[position] not in ADVERBS or position + 1 != len(words):
            raise ValueError(
                f"not an Aklan sentence: unexpected {words[position]!r} at word {position + 1}: {source!r}"
            )
        adverb = [ADVERBS[words[position]]]
    return " ".join([*adverb, *subject, *middle])


# -- the oracle ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    """One difference between a candidate and the reference.

    ``kind`` is ``wrong`` (``reference`` word written as ``candidate``), ``missing`` (``reference`` word absent),
    ``extra`` (``candidate`` word not in the reference) or ``order`` (``reference`` pair ``a b`` written ``b a``:
    ``reference`` holds ``"a b"``); ``same`` (a word both share) only in a full alignment path (:func:`align`).
    """

    kind: str
    reference: str = ""
    candidate: str = ""

    def describe(self) -> str:
        """A short English phrase for the judge's analysis.

        Example:
            >>> Edit("wrong", "seka", "seko").describe(), Edit("missing", "ilk").describe()
            ('seka written as seko', 'missing ilk')
        """
        if self.kind == "wrong":
            return f"{self.reference} written as {self.candidate}"
        if self.kind == "missing":
            return f"missing {self.reference}"
        if self.kind == "extra":
            return f"extra {self.candidate}"
        return f"{self.reference} in wrong order"


_NUMBER_PAIRS = frozenset(
    [frozenset((noun_form(stem, False), noun_form(stem, True))) for stem in NOUNS.values()]
    + [frozenset((verb_form(stem, False), verb_form(stem, True))) for stem in VERBS.values()]
)


def is_number_error(edit: Edit) -> bool:
    """Whether ``edit`` writes a noun or verb in the other number (a missed plural suffix, a verb that does not agree).

    Example:
        >>> is_number_error(Edit("wrong", "taluen", "talu")), is_number_error(Edit("wrong", "seka", "lona"))
        (True, False)
    """
    return edit.kind == "wrong" and frozenset((edit.reference, edit.candidate)) in _NUMBER_PAIRS


def wrong_agreement(reference: str) -> str:
    """``reference`` with its verb in the other number (one substitution error; the idiom, which does not agree, is
    left alone). Used to make SFT data ambiguous on purpose, an error that RL with a good reward should remove.

    Example:
        >>> wrong_agreement("kwe taluen ilk besk seko")
        'kwe taluen ilk besk seka'
    """
    words = reference.split()
    stem, suffix = words[-1][:-1], words[-1][-1:]
    flipped = {ending: VERB_SUFFIX[not plural] for plural, ending in VERB_SUFFIX.items()}
    if stem in VERBS.values() and suffix in flipped:
        words[-1] = stem + flipped[suffix]
    return " ".join(words)


def align(candidate: str, reference: str, with_matches: bool = False) -> list[Edit]:
    """The fewest edits (optimal string alignment over words) that turn ``reference`` into ``candidate``.

    Ties between equally short alignments are broken the same way every time, so analyses are reproducible.
    ``with_matches`` also returns the words both share, as ``same`` steps in order: the whole alignment path.

    Example:
        >>> [e.kind for e in align("talu besk seka", "talu ilk besk seka")]
        ['missing']
        >>> align("besk talu seka", "talu besk seka")
        [Edit(kind='order', reference='talu besk', candidate='')]
        >>> [e.kind for e in align("talu besk seka", "talu ilk besk seka", with_matches=True)]
        ['same', 'missing', 'same', 'same']
    """
    cand, ref = candidate.split(), reference.split()
    n, m = len(ref), len(cand)
    dist = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        dist[i][0] = i
    for j in range(m + 1):
        dist[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            best = min(
                dist[i - 1][j - 1] + (ref[i - 1] != cand[j - 1]),
                dist[i - 1][j] + 1,
                dist[i][j - 1] + 1,
            )
            if i > 1 and j > 1 and ref[i - 1] == cand[j - 2] and ref[i - 2] == cand[j - 1] and ref[i - 1] != ref[i - 2]:
                best = min(best, dist[i - 2][j - 2] + 1)
            dist[i][j] = best
    edits: list[Edit] = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and ref[i - 1] == cand[j - 1] and dist[i][j] == dist[i - 1][j - 1]:
            if with_matches:
                edits.append(Edit("same", ref[i - 1], cand[j - 1]))
            i, j = i - 1, j - 1
        elif (
            i > 1 and j > 1 and ref[i - 1] == cand[j - 2] and ref[i - 2] == cand[j - 1] and ref[i - 1] != ref[i - 2]
            and dist[i][j] == dist[i - 2][j - 2] + 1
        ):  # fmt: skip
            edits.append(Edit("order", f"{ref[i - 2]} {ref[i - 1]}"))
            i, j = i - 2, j - 2
        elif i > 0 and j > 0 and dist[i][j] == dist[i - 1][j - 1] + 1:
            edits.append(Edit("wrong", ref[i - 1], cand[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and dist[i][j] == dist[i - 1][j] + 1:
            edits.append(Edit("missing", ref[i - 1]))
            i -= 1
        else:
            edits.append(Edit("extra", candidate=cand[j - 1]))
            j -= 1
    return edits[::-1]


def oracle_errors(candidate: str, reference: str) -> int:
    """How many errors ``candidate`` has against ``reference`` (word-level optimal string alignment distance).

    Example:
        >>> oracle_errors("kwe taluen ilk besk seko", "kwe taluen ilk besk seko")
        0
        >>> oracle_errors("kwe talu ilk seko besk", "kwe taluen ilk besk seko")  # agreement + word order
        2
    """
    return len(align(candidate, reference))


def errors_to_score(errors: int) -> int:
    """Map an error count to the judge's 0-10 scale: 10 - 2 per error, 0 from 5 errors on.

    Example:
        >>> [errors_to_score(k) for k in range(7)]
        [10, 8, 6, 4, 2, 0, 0]
    """
    if errors < 0:
        raise ValueError(f"an error count cannot be negative, got {errors}")
    return 10 - 2 * min(errors, MAX_COUNTED_ERRORS)


def oracle_score(candidate: str, reference: str) -> int:
    """The oracle's 0-10 quality score of ``candidate`` (see :func:`errors_to_score`).

    Example:
        >>> oracle_score("kwe taluen besk seko", "kwe taluen ilk besk seko")
        8
    """
    return errors_to_score(oracle_errors(candidate, reference))


# -- candidates with known errors ------------------------------------------------------------------------------------

ERROR_KINDS: tuple[str, ...] = ("wrong_word", "agreement", "missing", "extra", "order")
"""What :func:`perturb` injects: another word of the same class, a noun or verb in the other number (the agreement
error), a dropped word, an inserted word, two adjacent words swapped."""


def _inject(words: list[str], rng: random.Random, kinds: Sequence[str]) -> list[str]:
    kind = rng.choice(kinds)
    words = list(words)
    if kind == "agreement":
        positions = [i for i, word in enumerate(words) if word in _OTHER_NUMBER]
        if positions:
            position = rng.choice(positions)
            words[position] = _OTHER_NUMBER[words[position]]
            return words
        kind = "wrong_word"
    if kind == "order" and len(words) >= 2:
        position = rng.randrange(len(words) - 1)
        words[position], words[position + 1] = words[position + 1], words[position]
        return words
    if kind == "missing" and len(words) >= 2:
        del words[rng.randrange(len(words))]
        return words
    if kind == "wrong_word" and words:
        position = rng.randrange(len(words))
        options = [w for w in TARGET_FORMS_BY_CLASS[_WORD_CLASS.get(words[position], "noun")] if w != words[position]]
        words[position] = rng.choice(options)
        return words
    words.insert(rng.randrange(len(words) + 1), rng.choice(TARGET_WORDS))
    return words


def perturb(
    reference: str, num_errors: int, rng: random.Random, kinds: Sequence[str] = ERROR_KINDS, max_tries: int = 200
) -> str:
    """A candidate with exactly ``num_errors`` oracle errors against ``reference``.

    Errors are injected one at a time (kinds drawn from ``kinds``); an injection that cancels or merges with an
    earlier one (so the oracle does not count one more error) is thrown away and drawn again, up to ``max_tries``
    times per error, and the whole candidate is started over when an error cannot be placed.

    Example:
        >>> candidate = perturb("kwe taluen ilk besk seko", 2, random.Random(0))
        >>> oracle_errors(candidate, "kwe taluen ilk besk seko")
        2
    """
    if num_errors < 0:
        raise ValueError(f"num_errors must be >= 0, got {num_errors}")
    unknown = [kind for kind in kinds if kind not in ERROR_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown error kind(s) {unknown}; choose from {list(ERROR_KINDS)}")
    for _ in range(max_tries):
        candidate = reference.split()
        for placed in range(num_errors):
            # Some partial candidates admit no single further error (a short, fully wrong one only grows its
            # distance by two insertions); after a few failed draws, start over.
            for _ in range(20):
                attempt = _inject(candidate, rng, kinds)
                if oracle_errors(" ".join(attempt), reference) == placed + 1:
                    candidate = attempt
                    break
            else:
                break
        else:
            return " ".join(candidate)
    raise ValueError(f"could not place {num_errors} separate errors in {reference!r} in {max_tries} tries")
