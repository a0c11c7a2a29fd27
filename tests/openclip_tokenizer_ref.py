"""References for the tokenizer tests: open_clip's own tokenizer and transformers' CLIP tokenizer.

`import open_clip` imports torchvision, which cannot load beside the CPU torch here, so open_clip's
`tokenizer.py` is loaded by file path (it needs only torch, ftfy and regex). Each reference returns
None when what it needs is not installed, and the tests skip.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os

import numpy as np


def vocab_path() -> str | None:
    """The vocabulary file inside the installed open_clip package (not imported), if any."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "bpe_simple_vocab_16e6.txt.gz")
    return path if os.path.isfile(path) else None


@functools.cache
def _open_clip_module():
    path = vocab_path()
    if path is None:
        return None
    spec = importlib.util.spec_from_file_location(
        "_open_clip_tokenizer", os.path.join(os.path.dirname(path), "tokenizer.py")
    )
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError:  # torch, ftfy or regex missing
        return None
    return module


@functools.cache
def open_clip_tokenizer():
    """open_clip's `SimpleTokenizer` (what `open_clip.tokenize` calls), or None."""
    module = _open_clip_module()
    return None if module is None else module.SimpleTokenizer()


def open_clip_tokenize(texts, context_length: int = 77) -> np.ndarray:
    return open_clip_tokenizer()(list(texts), context_length).numpy()


def write_hf_clip_files(directory: str) -> str:
    """open_clip's vocabulary as transformers' `vocab.json` + `merges.txt` (its special-token names)."""
    tok = open_clip_tokenizer()
    vocab = {t: i for t, i in tok.encoder.items()}
    vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")
    vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
    with open(os.path.join(directory, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with gzip.open(vocab_path(), "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1 : 49152 - 256 - 2 + 1]  # the merges open_clip reads
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(["#version: 0.2", *merges]) + "\n")
    return directory


def hf_clip_tokenizer(directory: str):
    """transformers' `CLIPTokenizer` (the fast one) built from `write_hf_clip_files`, or None."""
    try:
        from transformers import CLIPTokenizer
    except ImportError:
        return None
    write_hf_clip_files(directory)
    return CLIPTokenizer(
        vocab=os.path.join(directory, "vocab.json"), merges=os.path.join(directory, "merges.txt")
    )


def hf_ids(tokenizer, texts, context_length: int) -> np.ndarray:
    out = tokenizer(list(texts), padding="max_length", max_length=context_length, truncation=True)
    return np.asarray(out["input_ids"])
