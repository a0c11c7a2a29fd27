"""Data: TFDS builders for the embedded datasets, sources, tokenizers and the input pipeline.

* `load_source("shapes_count" | "digits_captions" | any prepared TFDS name, split)` → records;
  `check_source(name, config=...)` raises `ConfigError` for an unknown name or builder config;
* `make_dataset(source, tokenizer=..., batch_size=..., ...)` → resumable batches (grain);
* tokenizers: `make_tokenizer(spec, name)` ("word", "clip_bpe", "siglip:spiece.model", or a
  `.model` / `.json` / `.txt.gz` file), `word_tokenizer_for(name)`, `WordTokenizer`,
  `SentencePieceTokenizer`, `HFTokenizer`, `ClipBPETokenizer` (ids equal `open_clip.tokenize`),
  `SiglipTokenizer` (ids equal transformers' `SiglipTokenizer`), `resolve_tokenizer`;
* `zero_shot_prompts(name, question)` → prompts per class for zero-shot evaluation;
* `pair_frequencies(builder_config)` → how often each (colour, shape) pair occurs in shapes_count's
  training split (uniform, or Zipf for "long_tail" / "long_tail_steep").

TensorFlow is never imported: the builders write array_record and read it with `data_source`.
"""

from contrastive_jax.data._digits import DIGIT_WORDS
from contrastive_jax.data._pipeline import (
    PIXEL_MEAN,
    PIXEL_STD,
    ImageTextFolder,
    KeyMappedSource,
    check_source,
    default_data_dir,
    load_source,
    make_dataset,
    pixel_stats,
)
from contrastive_jax.data._prompts import (
    OPENAI_IMAGENET_TEMPLATES,
    QUESTIONS,
    TEMPLATES,
    class_names,
    template_prompts,
    zero_shot_prompts,
)
from contrastive_jax.data._shapes import COLORS, NUMBER_WORDS, SHAPES, pair_frequencies
from contrastive_jax.data._tfds_eval import (
    EvalSource,
    center_square,
    detect_keys,
    open_eval_source,
    with_class_names,
)
from contrastive_jax.data._tokenizers import (
    CLIP_BPE,
    ClipBPETokenizer,
    HFTokenizer,
    SentencePieceTokenizer,
    SiglipTokenizer,
    WordTokenizer,
    make_tokenizer,
    resolve_tokenizer,
    tokenizer_path,
    word_tokenizer_for,
)

__all__ = [
    "OPENAI_IMAGENET_TEMPLATES",
    "TEMPLATES",
    "EvalSource",
    "center_square",
    "detect_keys",
    "open_eval_source",
    "template_prompts",
    "COLORS",
    "pair_frequencies",
    "DIGIT_WORDS",
    "NUMBER_WORDS",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "QUESTIONS",
    "SHAPES",
    "CLIP_BPE",
    "ClipBPETokenizer",
    "HFTokenizer",
    "ImageTextFolder",
    "KeyMappedSource",
    "SentencePieceTokenizer",
    "SiglipTokenizer",
    "WordTokenizer",
    "check_source",
    "class_names",
    "default_data_dir",
    "load_source",
    "make_dataset",
    "make_tokenizer",
    "resolve_tokenizer",
    "tokenizer_path",
    "pixel_stats",
    "with_class_names",
    "word_tokenizer_for",
    "zero_shot_prompts",
]
