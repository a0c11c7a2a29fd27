"""Tokenizers with one interface: `encode(texts, context_length) -> int32[N, T]`, `decode`, `vocab_size`, `pad_id`.

Every encoded row is padded at the end with `pad_id`, which the text towers rely on (the
embedding is read at the last non-pad token, or where a converted model's `pool` says). A row
longer than the context is cut so that its end token stays last. `make_tokenizer(spec,
dataset_name)` picks the tokenizer for a config's `data.tokenizer`. No tokenizer downloads anything.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import html
import json
import os
import re
import string
from collections.abc import Iterable, Sequence

import numpy as np

from contrastive_jax._errors import ConfigError
from contrastive_jax.data import _digits, _shapes

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
    if dataset_name == "shapes_count":
        words = ["a", "an", "and", *_shapes.NUMBER_WORDS, *_shapes.COLORS]
        words += [w for s in _shapes.SHAPES for w in (s, s + "s")]
        return WordTokenizer(words)
    if dataset_name == "digits_captions":
        texts = [_digits.digit_caption(d, t) for d in range(10) for t in range(len(_digits.TEMPLATES))]
        return WordTokenizer.build(texts)
    raise ConfigError(
        f"the 'word' tokenizer has a vocabulary only for the embedded datasets, not {dataset_name!r}; use "
        "--config.data.tokenizer=clip_bpe (or a SentencePiece / tokenizers file)"
    )


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


class SiglipTokenizer:
    """SigLIP's SentencePiece tokenizer (`spiece.model`), as transformers' `SiglipTokenizer`.

    Text is lower-cased, stripped of ASCII punctuation and of repeated whitespace (big_vision's
    `canonicalize_text`), encoded without a leading word marker when none is needed, and ends with
    `</s>`, which also pads: `tokenizer(texts, padding="max_length", max_length=T,
    truncation=True)` ids (SigLIP's text tower reads the last position). A caption longer than
    the context is cut and keeps `</s>` last.
    """

    MARKER = "\u2581"  # SentencePiece's word-start marker "▁"

    def __init__(self, model_file: str):
        import sentencepiece

        self._sp = sentencepiece.SentencePieceProcessor(model_file=model_file)
        self.eos_id = self._sp.piece_to_id("</s>")
        self.pad_id = self.eos_id
        self.vocab_size = self._sp.get_piece_size()
        self._unk = self._sp.id_to_piece(self._sp.unk_id())
        self._unk_length = len(self._sp.encode(self._unk, out_type=str))

    @staticmethod
    def canonicalize(text: str) -> str:
        text = text.lower().translate(str.maketrans("", "", string.punctuation))
        return re.sub(r"\s+", " ", text).strip()

    def _ids(self, text: str) -> list[int]:
        # transformers prefixes the marker, then encodes "<unk>" + text and drops the "<unk>"
        # pieces, so that the model's own dummy prefix does not add a second marker.
        text = self.canonicalize(self.MARKER + text.replace(self.MARKER, " "))
        pieces = self._sp.encode(self._unk + text, out_type=str)
        pieces = pieces[self._unk_length :] if len(pieces) >= self._unk_length else pieces
        return [self._sp.piece_to_id(p) for p in pieces]

    def encode(self, texts: Sequence[str], context_length: int) -> np.ndarray:
        return _fit([self._ids(t) + [self.eos_id] for t in _texts(texts)], context_length, self.pad_id, True)

    def decode(self, ids) -> list[str]:
        return [
            self._sp.decode([int(i) for i in row if i != self.eos_id and i < self.vocab_size])
            for row in np.asarray(ids)
        ]


class HFTokenizer:
    """A Hugging Face `tokenizers` JSON file (e.g. transformers' CLIP `tokenizer.json`).

    Special tokens come from the file's post-processor, as with `add_special_tokens=True`; a row
    longer than the context keeps its final (end) token last, as transformers' `truncation=True`
    does. Padding uses the first of: the file's own padding id; the `pad_token` of a
    `tokenizer_config.json` or `special_tokens_map.json` beside the file; a vocabulary entry named
    "<pad>", "[PAD]" or "<|pad|>"; the end token the post-processor appends (transformers' CLIP
    pads with its end token "<|endoftext|>"); else an extra id one past the vocabulary. So a CLIP
    `tokenizer.json`, even without its config files, gives transformers' `tokenizer(texts,
    padding="max_length", max_length=T, truncation=True)` ids. The file's own padding length and
    truncation are ignored: the context length is `encode`'s argument.
    """

    PAD_NAMES = ("<pad>", "[PAD]", "<|pad|>")

    def __init__(self, tokenizer_json: str):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(tokenizer_json)
        pad_id = self._pad_id(tokenizer_json)
        self._tok.no_padding()
        self._tok.no_truncation()
        size = self._tok.get_vocab_size(with_added_tokens=True)
        self.pad_id = size if pad_id is None else pad_id
        self.vocab_size = size + (pad_id is None)

    def _pad_id(self, tokenizer_json: str) -> int | None:
        if self._tok.padding is not None:
            return self._tok.padding["pad_id"]
        names = [_sibling_pad_token(os.path.dirname(os.path.abspath(tokenizer_json))), *self.PAD_NAMES]
        ids = [self._tok.token_to_id(name) for name in names if name is not None]
        ids = [i for i in ids if i is not None]
        if ids:
            return ids[0]
        added = self._tok.encode("", add_special_tokens=True).ids
        return added[-1] if added else None

    def encode(self, texts: Sequence[str], context_length: int) -> np.ndarray:
        rows = [enc.ids for enc in self._tok.encode_batch(_texts(texts))]
        return _fit(rows, context_length, self.pad_id, keep_last=True)

    def decode(self, ids) -> list[str]:
        """Text without special tokens and padding; a BPE end-of-word suffix ("</w>") becomes a space."""
        texts = self._tok.decode_batch([[int(i) for i in row if i != self.pad_id] for row in np.asarray(ids)])
        suffix = getattr(self._tok.model, "end_of_word_suffix", None)
        return [" ".join(t.replace(suffix, " ").split()) for t in texts] if suffix else texts


def _sibling_pad_token(directory: str) -> str | None:
    """`pad_token` of transformers' `tokenizer_config.json` / `special_tokens_map.json` in `directory`."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path) as f:
                pad = json.load(f).get("pad_token")
            if isinstance(pad, dict):
                pad = pad.get("content")
            if pad:
                return pad
    return None


CLIP_BPE = "clip_bpe"
_CLIP_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
# The merges open_clip and OpenAI's CLIP read from their vocabulary file: 49152 - 256 - 2 lines.
_CLIP_NUM_MERGES = 48894
# open_clip's pre-tokenisation; text is lower-cased first, so its IGNORECASE flag changes nothing.
_CLIP_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [b for b in range(256) if b not in printable]
    return dict(
        zip(printable + others, [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))])
    )


def clip_vocab_path() -> str:
    """CLIP's BPE vocabulary as shipped inside this package (OpenAI's MIT-licensed file, the one
    open_clip and OpenAI's CLIP read; `assets/LICENSE-CLIP-BPE.txt`)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", _CLIP_VOCAB_FILE)


def clip_clean(text: str) -> str:
    """open_clip's default text cleaning: ftfy, HTML entities undone twice, whitespace runs → one space, lower case."""
    try:
        import ftfy
    except ImportError as e:
        raise ImportError(
            "ClipBPETokenizer needs ftfy to clean text exactly as CLIP does: pip install ftfy"
        ) from e
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


class ClipBPETokenizer:
    """OpenAI CLIP's byte-level BPE; ids equal `open_clip.tokenize`'s.

    Each text is cleaned (`clip_clean`), split by CLIP's regular expression, byte-encoded and
    merged with the vocabulary file's BPE merges into ids of a 49408-entry vocabulary, and becomes
    `[<start_of_text> 49406, ..., <end_of_text> 49407, 0, ...]`: padded with 0 (open_clip's
    padding, although id 0 is also "!"), cut to the context with the end token kept last. The end
    token is the largest id, which is how open_clip's text tower finds it (`pool="argmax"`).

    Args:
      vocab_path: `bpe_simple_vocab_16e6.txt.gz`; None takes the copy this package ships.
      context_length: the default length of `encode`'s rows (77, as CLIP's).
    """

    pad_id = 0

    def __init__(self, vocab_path: str | None = None, *, context_length: int = 77):
        from tokenizers import AddedToken, Regex, Tokenizer, pre_tokenizers
        from tokenizers.models import BPE

        vocab_path = vocab_path or clip_vocab_path()
        if not os.path.isfile(vocab_path):
            raise FileNotFoundError(
                f"ClipBPETokenizer's vocabulary file {vocab_path} does not exist (the package ships "
                f"{_CLIP_VOCAB_FILE}; a broken install lacks it): pass vocab_path= or reinstall"
            )
        with gzip.open(vocab_path, "rt", encoding="utf-8") as f:
            merges = [tuple(line.split()) for line in f.read().split("\n")[1 : _CLIP_NUM_MERGES + 1]]
        byte_chars = list(_bytes_to_unicode().values())
        self.tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
        self.tokens += ["<start_of_text>", "<end_of_text>"]
        self.bos_id, self.eos_id = len(self.tokens) - 2, len(self.tokens) - 1
        self.vocab_size, self.context_length = len(self.tokens), context_length
        self._byte_values = {c: b for b, c in _bytes_to_unicode().items()}

        model = BPE(
            vocab={t: i for i, t in enumerate(self.tokens)},
            merges=merges,
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
        )
        self._tok = Tokenizer(model)
        self._tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        # open_clip's regular expression matches its two special tokens first, wherever they occur.
        self._tok.add_special_tokens([AddedToken(t, normalized=False) for t in self.tokens[-2:]])

    def encode(self, texts: Sequence[str], context_length: int | None = None) -> np.ndarray:
        cleaned = [clip_clean(t) for t in _texts(texts)]
        rows = [
            [self.bos_id, *e.ids, self.eos_id]
            for e in self._tok.encode_batch(cleaned, add_special_tokens=False)
        ]
        return _fit(rows, context_length or self.context_length, self.pad_id, keep_last=True)

    def decode(self, ids) -> list[str]:
        """open_clip's decoding of the tokens between the start and the first end token, stripped.

        Text comes back cleaned and lower-cased, with a space after each word and punctuation run.
        """
        texts = []
        for row in np.asarray(ids).tolist():
            row = row[1:] if row and row[0] == self.bos_id else row
            row = row[: row.index(self.eos_id)] if self.eos_id in row else row
            words = "".join(self.tokens[i] for i in row if i < self.bos_id).split("</w>")
            raw = b" ".join(bytes(self._byte_values[c] for c in word) for word in words)
            texts.append(raw.decode("utf-8", errors="replace").strip())
        return texts


SIGLIP_PREFIX = "siglip:"
NAMED_TOKENIZERS = ("word", CLIP_BPE)
TOKENIZER_FILES = (".model", ".json", ".txt.gz")


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
    """A parsed `data.tokenizer`: `kind` is "word", "clip_bpe", "siglip", "sentencepiece",
    "hf" or "clip_bpe_file"; `path` the file it names (None for the named ones)."""

    kind: str
    path: str | None = None


def parse_tokenizer_spec(spec) -> TokenizerSpec:
    """The one grammar of tokenizer specs: "word", "clip_bpe", "siglip:PATH.model", or a file
    ending in .model (SentencePiece), .json (Hugging Face tokenizers) or .txt.gz (CLIP's BPE
    vocabulary). Raises `ConfigError` (naming the accepted forms) for anything else."""
    spec = str(spec)
    if spec in NAMED_TOKENIZERS:
        return TokenizerSpec(spec)
    if spec.startswith(SIGLIP_PREFIX) and spec.endswith(".model"):
        return TokenizerSpec("siglip", spec[len(SIGLIP_PREFIX) :])
    if not spec.startswith(SIGLIP_PREFIX):
        for suffix, kind in ((".model", "sentencepiece"), (".json", "hf"), (".txt.gz", "clip_bpe_file")):
            if spec.endswith(suffix):
                return TokenizerSpec(kind, spec)
    raise ConfigError(
        f"config.data.tokenizer is {spec!r}; use 'word', 'clip_bpe', a SentencePiece .model file "
        "('siglip:PATH.model' for SigLIP's), a Hugging Face tokenizers .json file or a CLIP BPE .txt.gz "
        "vocabulary"
    )


def check_tokenizer(spec) -> None:
    """`parse_tokenizer_spec`, and the file it names must exist (`ConfigError` otherwise)."""
    parsed = parse_tokenizer_spec(spec)
    if parsed.path is not None and not os.path.isfile(parsed.path):
        raise ConfigError(
            f"config.data.tokenizer file {parsed.path!r} does not exist; pass the path to an existing file"
        )


def tokenizer_path(spec: str) -> str | None:
    """The file a tokenizer spec names (without a "siglip:" prefix), or None for a named one."""
    spec = str(spec)
    if spec in NAMED_TOKENIZERS:
        return None
    return spec[len(SIGLIP_PREFIX) :] if spec.startswith(SIGLIP_PREFIX) else spec


def resolve_tokenizer(spec: str, directory: str) -> str:
    """`spec` with its file made absolute when it names a file inside `directory` (a run or a
    converted directory names its tokenizer relative to itself)."""
    path = tokenizer_path(spec)
    if path is None or not os.path.isfile(os.path.join(directory, path)):
        return spec
    prefix = SIGLIP_PREFIX if str(spec).startswith(SIGLIP_PREFIX) else ""
    return prefix + os.path.abspath(os.path.join(directory, path))


def make_tokenizer(spec="word", dataset_name: str | None = None):
    """The tokenizer a spec names, or a data config's (`config.data`: its `tokenizer`, default
    "word", and its dataset `name`).

    `spec`: "word" (`word_tokenizer_for(dataset_name)`), "clip_bpe" (CLIP's BPE from the
    vocabulary this package ships), "siglip:PATH" (SigLIP's `spiece.model`, `SiglipTokenizer`),
    or a file: a SentencePiece `.model`, a Hugging Face `.json`, CLIP's BPE vocabulary `.txt.gz`
    (`parse_tokenizer_spec`; anything else is a `ConfigError`).
    """
    if hasattr(spec, "get") and not isinstance(spec, str):  # a data config
        spec, dataset_name = spec.get("tokenizer", "word"), spec.get("name", dataset_name)
    parsed = parse_tokenizer_spec(spec)
    if parsed.kind == "word":
        return word_tokenizer_for(dataset_name)
    if parsed.kind == CLIP_BPE:
        return ClipBPETokenizer()
    return _TOKENIZER_CLASSES[parsed.kind](parsed.path)


_TOKENIZER_CLASSES = {
    "siglip": SiglipTokenizer,
    "sentencepiece": SentencePieceTokenizer,
    "hf": HFTokenizer,
    "clip_bpe_file": ClipBPETokenizer,
}
