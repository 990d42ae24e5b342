"""The word-level caption tokenizer shared by teacher and student (so token-level KD is possible).

Built with Hugging Face `tokenizers` and saved as a standard `tokenizer.json`: lower-case, NFKC, punctuation
split off and dropped from the vocabulary, one id per word seen at least `min_count` times in training captions.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]
_PUNCTUATION = re.compile(r"[^\w\s']")


def normalise_caption(text: str) -> str:
    """The text form captions are compared in: lower case, no punctuation, single spaces."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


class CaptionTokenizer:
    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"tokenizer lacks the special tokens {missing}: it was not built by eacap "
                             "(build one with CaptionTokenizer.train)")
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = (tokenizer.token_to_id(t) for t in SPECIAL_TOKENS)

    @classmethod
    def train(cls, captions: Iterable[str], min_count: int = 1) -> "CaptionTokenizer":
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces; no subwords here
        trainer = trainers.WordLevelTrainer(min_frequency=min_count, special_tokens=SPECIAL_TOKENS, show_progress=False)
        tokenizer.train_from_iterator((normalise_caption(c) for c in captions), trainer=trainer)
        return cls(tokenizer)

    @classmethod
    def from_file(cls, path: str | Path) -> "CaptionTokenizer":
        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def special(self) -> dict[str, int]:
        return {"pad": self.pad_id, "bos": self.bos_id, "eos": self.eos_id, "unk": self.unk_id}

    def encode(self, caption: str) -> list[int]:
        """Caption -> ids with <s> ... </s>."""
        words = self.tokenizer.encode(normalise_caption(caption), add_special_tokens=False).ids
        return [self.bos_id, *words, self.eos_id]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)
