"""The sound vocabulary: which caption words name which sound class, which words start a new clause, and when a
caption names a sound twice.

The one home of the rule "a sound is named twice" (`named_twice`): the same keyword said twice, or the class named
again in a later clause by any of its keywords. The metrics check captions against it (`repeated_classes`,
`eacap.metrics.sound_naming`) and decoding enforces it token by token (`SoundWords.block_named`, behind
`DecodingOptions.no_repeat_sounds`). The keywords per class come from the training corpus's class table; a
checkpoint carries them in its config.json (`"sound_keywords"`), so a model decodes the same way wherever it is
loaded.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

Keywords = Mapping[str, Sequence[str]]    # sound class -> the words that name it

# Words that start a new clause of a caption ("a dog barks | while rain falls", "a bell rings | and then | a door
# opens", "rain falls | with | thunder in the background"): a sound named again after one of them is named twice.
# A word's clause is the number of these words before it.
CLAUSE_WORDS = frozenset({"while", "as", "and", "then", "before", "after", "which", "followed", "accompanied",
                          "with", "over"})


def check_keywords(keywords: object) -> dict[str, list[str]]:
    """`keywords` as {class: [keyword, ...]}, or a ValueError that says what is wrong with it."""
    if not isinstance(keywords, Mapping):
        raise ValueError(f"sound keywords must map each class to a list of keywords, got {type(keywords).__name__}")
    for cls, words in keywords.items():
        if isinstance(words, str) or not isinstance(words, Sequence) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"sound keywords of {cls!r} must be a list of words, got {words!r}")
    return {str(cls): list(words) for cls, words in keywords.items()}


@dataclass(frozen=True)
class SoundWords:
    """Per token of a caption vocabulary: the index in `classes` of the sound it names (-1: none, or several, as
    "guitar" names both guitar classes) and whether it starts a clause."""
    classes: tuple[str, ...]
    token_class: torch.Tensor   # [vocab] long, -1 where the token names no single class
    clause: torch.Tensor        # [vocab] bool

    def __post_init__(self) -> None:
        # Lookup tables for `block_named`, built once: column n of a row's "named" set means "no class"; the
        # vocabulary's words of no class look up column n + 1, which is never set. For compiled steps, the same as
        # [n + 1, vocab] ones where row c marks the keywords of class c (row n, no class, marks none).
        n = len(self.classes)
        object.__setattr__(self, "_history_slot", self.token_class.masked_fill(self.token_class < 0, n))
        object.__setattr__(self, "_vocab_slot", self.token_class.masked_fill(self.token_class < 0, n + 1))
        named = self.token_class >= 0
        keywords = torch.zeros(n + 1, self.token_class.shape[0], device=self.token_class.device)
        keywords[self.token_class[named], named.nonzero()[:, 0]] = 1.0
        object.__setattr__(self, "_class_keywords", keywords)

    @classmethod
    def build(cls, vocab: Mapping[str, int], keywords: Mapping[str, Sequence[str]]) -> "SoundWords":
        """From a tokenizer's word -> id table and {class: keywords}. Keywords of more than one word, or not in the
        vocabulary, cannot be matched token by token and are left out."""
        keywords = check_keywords(keywords)
        classes = tuple(sorted(keywords))
        owners: dict[int, set[int]] = {}
        for index, name in enumerate(classes):
            for keyword in keywords[name]:
                token = vocab.get(keyword.lower())
                if token is not None:
                    owners.setdefault(token, set()).add(index)
        size = max(vocab.values(), default=-1) + 1
        token_class = torch.full((size,), -1, dtype=torch.long)
        for token, owner in owners.items():
            if len(owner) == 1:
                token_class[token] = next(iter(owner))
        clause = torch.zeros(size, dtype=torch.bool)
        for word in CLAUSE_WORDS:
            if word in vocab:
                clause[vocab[word]] = True
        return cls(classes, token_class, clause)

    def to(self, device) -> "SoundWords":
        """The same tables on `device` (decoding moves them once per call, not once per step)."""
        device = torch.device(device)
        if self.token_class.device == device:
            return self
        return SoundWords(self.classes, self.token_class.to(device), self.clause.to(device))

    def block_named(self, logp: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Set to -inf, in place, every token of `logp` [rows, vocab] that would name a sound a second time
        (`named_twice`) given each row's `history` [rows, t]: any keyword of a class named in an earlier clause, and
        a keyword already used in this one. Two keywords of a class in one clause stay allowed ("a gust of wind",
        "the sea breaks on the shore"). A few small tensor operations per step, whatever the number of rows: it runs
        at every decoding step, and a step of the small student costs well under a millisecond."""
        from .decoding import ban  # decoding builds on this module

        if history.shape[1] == 0:
            return logp
        n = len(self.classes)
        named = self._history_slot[history]                                      # [rows, t]: class or n
        clause = self.clause[history].cumsum(1)                                  # the clause each token is in
        earlier = named.masked_fill(clause == clause[:, -1:], n)                 # only earlier clauses' sounds
        if torch.compiler.is_compiling():
            # Compiled steps (`eacap.graphs`): the classes' keywords as a product of ones (exact), then any keyword
            # already said, without the gather of [rows, vocab] below, which Inductor makes a loop of scalar loads
            # (see `decoding.ban`)
            seen = torch.zeros(history.shape[0], n + 1, device=logp.device).scatter_(1, earlier, 1.0)
            keywords = seen @ self._class_keywords[:, : logp.shape[1]]
            return ban(logp.masked_fill_(keywords > 0, float("-inf")), history, named != n)
        seen = torch.zeros(history.shape[0], n + 2, dtype=torch.bool, device=history.device).scatter_(1, earlier, True)
        mask = seen[:, self._vocab_slot[: logp.shape[1]]]                        # [rows, vocab]: their keywords
        mask.scatter_(1, history, named != n)                                    # and any keyword already said
        return logp.masked_fill_(mask, float("-inf"))


# -- sounds named in a caption's text ---------------------------------------------------------------------------

class Mention(NamedTuple):
    sound: str      # the class named
    keyword: str    # the keyword as written (whitespace collapsed)
    clause: int     # the clause it is in (see CLAUSE_WORDS)


def keyword_patterns(keywords: Keywords) -> tuple[list[tuple[re.Pattern, str | None]], list[str]]:
    """Compile (pattern, class) pairs, longest phrase first; a keyword shared by several classes gets class None.
    Also returns those shared keywords."""
    owners: dict[tuple[str, ...], set[str]] = {}
    for cls, words in keywords.items():
        if isinstance(words, str):
            raise TypeError(f"keywords[{cls!r}] must be a list of keywords, got the string {words!r}")
        for keyword in words:
            phrase = tuple(keyword.lower().split())
            if not phrase:
                raise ValueError(f"keywords[{cls!r}] holds an empty keyword")
            owners.setdefault(phrase, set()).add(cls)
    # Ambiguous phrases still take part in longest-match-first, so their words do not fall through to a shorter,
    # unambiguous keyword that happens to sit inside them.
    ordered = sorted(owners.items(), key=lambda item: (-len(item[0]), -len(" ".join(item[0])), item[0]))
    patterns = [
        (
            re.compile(r"(?<!\w)" + r"\s+".join(re.escape(word) for word in phrase) + r"(?!\w)"),
            next(iter(classes)) if len(classes) == 1 else None,
        )
        for phrase, classes in ordered
    ]
    ambiguous = sorted(" ".join(phrase) for phrase, classes in owners.items() if len(classes) > 1)
    return patterns, ambiguous


def mentions(caption: str, patterns: list[tuple[re.Pattern, str | None]]) -> list[Mention]:
    """Every keyword match of `caption` (patterns from `keyword_patterns`), longest first; a word inside a longer
    match is not matched again, and ambiguous keywords name no class."""
    text = caption.lower()
    taken = [False] * len(text)
    found = []
    for pattern, cls in patterns:
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(taken[start:end]):
                continue
            taken[start:end] = [True] * (end - start)
            if cls is not None:
                clause = sum(word in CLAUSE_WORDS for word in re.findall(r"[\w'-]+", text[:start]))
                found.append(Mention(cls, " ".join(match.group(0).split()), clause))
    return found


def named_twice(found: Sequence[Mention]) -> set[str]:
    """The classes named twice among a caption's mentions: the same keyword at two places ("a dog barks and
    barks"), or the class named in more than one clause, by any of its keywords ("a rain shower pours down while
    rain patters", "a frog croaks as a toad croaks"). Two keywords of a class in one clause are one description,
    not a repeat ("the sea breaks on the shore", "a gust of wind")."""
    words, clauses, repeated = set(), {}, set()
    for cls, word, clause in found:
        if (cls, word) in words or clauses.get(cls, clause) != clause:
            repeated.add(cls)
        words.add((cls, word))
        clauses.setdefault(cls, clause)
    return repeated


def repeated_classes(caption: str, keywords: Keywords) -> set[str]:
    """The classes `caption` names twice (`named_twice`), by the keywords {class: [keyword, ...]}."""
    return named_twice(mentions(caption, keyword_patterns(keywords)[0]))
