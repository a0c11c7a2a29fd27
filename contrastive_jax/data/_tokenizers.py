"""Tokenizers with one interface: `encode(texts, context_length) -> int32[N, T]`, `decode`, `vocab_size`, `pad_id`.

Every encoded row is padded at the end with `pad_id`, which the text towers rely on (the
embedding is read at the last non-pad token). No tokenizer downloads anything.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterable, Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def _fit(rows: list[list[int]], context_length: int, pad_id: int, keep_last: bool) -> np.ndarray:
    """Pads with `pad_id`; truncation keeps the final (end-of-text) token when `keep_last`."""
    if context_length < 1:
        raise ValueError(f"context_length must be >= 1, got {context_length}")
    out = np.full((len(rows), context_length), pad_id, np.int32)
    for i, row in enumerate(rows):
        if len(row) > context_length:
            row = row[: context_length - 1] + row[-1:] if keep_last else row[:context_length]
        out[i, : len(row)] = row
    return out


def _texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode takes a sequence of strings, not a single string")
    return [t.decode() if isinstance(t, bytes) else str(t) for t in texts]


class WordTokenizer:
    """Lower-cased words and punctuation; ids: pad 0, bos 1, eos 2, unk 3, then the vocabulary.

    Each text becomes `[bos, w_1, ..., w_k, eos, pad, ...]`.
    """

    SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, words: Sequence[str]):
        self.words = list(self.SPECIALS) + [w for w in words if w not in self.SPECIALS]
        self.ids = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> WordTokenizer:
        """Vocabulary of every word seen `min_count` times, most frequent first (ties alphabetical)."""
        counts = collections.Counter(w for t in _texts(texts) for w in _WORD.findall(t.lower()))
        return cls([w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count])

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def encode(self, texts: Sequence[str], context_length: int) -> np.ndarray:
        rows = [
            [self.bos_id] + [self.ids.get(w, self.unk_id) for w in _WORD.findall(t.lower())] + [self.eos_id]
            for t in _texts(texts)
        ]
        return _fit(rows, context_length, self.pad_id, keep_last=True)

    def decode(self, ids) -> list[str]:
        return [" ".join(self.words[i] for i in row if i >= len(self.SPECIALS)) for row in np.asarray(ids)]

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump({"kind": "word", "words": self.words[len(self.SPECIALS) :]}, f)

    @classmethod
    def load(cls, path: str) -> WordTokenizer:
        with open(path) as f:
            data = json.load(f)
        if data.get("kind") != "word":
            raise ValueError(f"{path} is not a WordTokenizer file")
        return cls(data["words"])


def word_tokenizer_for(dataset_name: str) -> WordTokenizer:
    """The deterministic vocabulary of an embedded dataset's caption grammar (all splits, prompts)."""
    from contrastive_jax.data import _digits, _shapes

    if dataset_name == "shapes_count":
        words = ["a", "an", "and", *_shapes.NUMBER_WORDS, *_shapes.COLORS]
        words += [w for s in _shapes.SHAPES for w in (s, s + "s")]
        return WordTokenizer(words)
    if dataset_name == "digits_captions":
        texts = [_digits.digit_caption(d, t) for d in range(10) for t in range(len(_digits.TEMPLATES))]
        return WordTokenizer.build(texts)
    raise ValueError(f"no built-in vocabulary for {dataset_name!r}; use a SentencePiece or tokenizers file")


class SentencePieceTokenizer:
    """A SentencePiece model file; BOS/EOS added when the model defines them.

    If the model has no pad piece, padding gets the extra id `vocab_size - 1` (one past the
    model's pieces), so that it can never be confused with a real token.
    """

    def __init__(self, model_file: str):
        import sentencepiece

        self._sp = sentencepiece.SentencePieceProcessor(model_file=model_file)
        pieces = self._sp.get_piece_size()
        self.pad_id = self._sp.pad_id() if self._sp.pad_id() >= 0 else pieces
        self.vocab_size = pieces + (self._sp.pad_id() < 0)

    def encode(self, texts: Sequence[str], context_length: int) -> np.ndarray:
        bos, eos = self._sp.bos_id(), self._sp.eos_id()
        rows = [
            ([bos] if bos >= 0 else []) + self._sp.encode(t) + ([eos] if eos >= 0 else [])
            for t in _texts(texts)
        ]
        return _fit(rows, context_length, self.pad_id, keep_last=eos >= 0)

    def decode(self, ids) -> list[str]:
        return [
            self._sp.decode([int(i) for i in row if i != self.pad_id and i < self._sp.get_piece_size()])
            for row in np.asarray(ids)
        ]


class HFTokenizer:
    """A Hugging Face `tokenizers` JSON file (e.g. a CLIP BPE tokenizer built offline).

    Special tokens come from the file's post-processor; padding uses the file's pad token
    ("<pad>", "[PAD]" or "<|pad|>") or else an extra id one past the vocabulary.
    """

    PAD_NAMES = ("<pad>", "[PAD]", "<|pad|>")

    def __init__(self, tokenizer_json: str):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(tokenizer_json)
        size = self._tok.get_vocab_size(with_added_tokens=True)
        pads = [
            self._tok.token_to_id(name) for name in self.PAD_NAMES if self._tok.token_to_id(name) is not None
        ]
        self.pad_id = pads[0] if pads else size
        self.vocab_size = size + (not pads)

    def encode(self, texts: Sequence[str], context_length: int) -> np.ndarray:
        rows = [enc.ids for enc in self._tok.encode_batch(_texts(texts))]
        return _fit(rows, context_length, self.pad_id, keep_last=True)

    def decode(self, ids) -> list[str]:
        return self._tok.decode_batch([[int(i) for i in row if i != self.pad_id] for row in np.asarray(ids)])
