"""The sound vocabulary: which caption words name which sound class, and which words start a new clause.

One home for what both the metrics (`eacap.metrics.sound_naming`: does a caption name a sound twice?) and decoding
(`DecodingOptions.no_repeat_sounds`: never name a sound again in a later clause) need to know. The keywords per
class come from the training corpus's class table; a checkpoint carries them in its config.json
(`"sound_keywords"`), so a model decodes the same way wherever it is loaded.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

# Words that start a new clause of a caption ("a dog barks | while rain falls", "a bell rings | and then | a door
# opens", "rain falls | with | thunder in the background"): a sound named again after one of them is named twice.
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
        # vocabulary's words of no class look up column n + 1, which is never set.
        n = len(self.classes)
        object.__setattr__(self, "_history_slot", self.token_class.masked_fill(self.token_class < 0, n))
        object.__setattr__(self, "_vocab_slot", self.token_class.masked_fill(self.token_class < 0, n + 1))

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

    def block_named(self, logp: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Set to -inf, in place, every token of `logp` [rows, vocab] that would name a sound a second time given
        each row's `history` [rows, t]: any keyword of a class named in an earlier clause, and a keyword already
        used in this one. Two keywords of a class in one clause stay allowed ("a gust of wind", "the sea breaks on
        the shore"). A few small tensor operations per step, whatever the number of rows (a step of the small
        student is about half a millisecond, so this must stay cheap: about 50 us here)."""
        if history.shape[1] == 0:
            return logp
        n, device = len(self.classes), history.device
        named = self._history_slot.to(device)[history]                           # [rows, t]: class or n
        clause = self.clause.to(device)[history].cumsum(1)                       # the clause each token is in
        earlier = named.masked_fill(clause == clause[:, -1:], n)                 # only earlier clauses' sounds
        seen = torch.zeros(history.shape[0], n + 2, dtype=torch.bool, device=device).scatter_(1, earlier, True)
        mask = seen[:, self._vocab_slot.to(device)[: logp.shape[1]]]             # [rows, vocab]: their keywords
        mask.scatter_(1, history, named != n)                                    # and any keyword already said
        return logp.masked_fill_(mask, float("-inf"))
