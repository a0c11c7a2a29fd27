"""Data: sources, image decoding and augmentation, tokenizers and the input pipeline.

* `input_from_config(config.data, split, batch_size=...)` → the batches of a config's dataset
  (the one builder training, evaluation, zero-shot and plots use);
* sources: `load_source("shapes_count" | "digits_captions" | any prepared TFDS name, split)`,
  `WebDatasetSource(urls)` (img2dataset's tar shards, random access), `ResampledShards(urls)`
  (shards drawn with replacement), `ParquetShards(urls)` (img2dataset's parquet output),
  `ImageTextFolder(root, captions)`; `check_source(name, config=...)` raises `ConfigError` for an
  unknown name or builder config; `expand_urls` expands brace ranges;
* `make_dataset(source, tokenizer=..., batch_size=..., ...)` → resumable batches (grain), decoded
  and augmented (`load_image`, `AUGMENTATIONS`) and tokenized in worker processes, uint8 images
  (`normalize_images` on the device), bad records skipped and counted (`SKIP_KINDS`);
  `DevicePrefetch` puts them on the devices ahead of the step;
* tokenizers: `make_tokenizer(spec, name)` ("word", "clip_bpe", "siglip:spiece.model", or a
  `.model` / `.json` / `.txt.gz` file), `word_tokenizer_for(name)`, `WordTokenizer`,
  `SentencePieceTokenizer`, `HFTokenizer`, `ClipBPETokenizer` (ids equal `open_clip.tokenize`),
  `SiglipTokenizer` (ids equal transformers' `SiglipTokenizer`), `resolve_tokenizer`;
* local views (`data.local_views`, clip-rocket's CL2L / BarLIP): `local_image_views` (wide crops,
  colour jitter, grayscale, blur, flip: `photometric_augment`) and `local_captions` (stopword
  removal, EDA's swap and deletion); `weak_caption` (`data.drop_stopwords_prob`: the global
  caption without its stopwords, clip-rocket's weak text augmentation);
* `zero_shot_prompts(name, question)` → prompts per class for zero-shot evaluation;
* `pair_frequencies(builder_config)` → how often each (colour, shape) pair occurs in shapes_count's
  training split (uniform, or Zipf for "long_tail" / "long_tail_steep").

TensorFlow is never imported: the builders write array_record and read it with `data_source`.
"""

from contrastive_jax.data._digits import DIGIT_WORDS
from contrastive_jax.data._images import AUGMENTATIONS, BadImage, crop_box, load_image
from contrastive_jax.data._input import (
    DATA_DEFAULTS,
    Input,
    check_data_config,
    has_eval_split,
    input_from_config,
    source_from_config,
    streams,
    with_data_defaults,
)
from contrastive_jax.data._parquet import ParquetShards
from contrastive_jax.data._pipeline import (
    PIXEL_MEAN,
    PIXEL_STD,
    SKIP_KINDS,
    SKIP_REASONS,
    DevicePrefetch,
    host_fields,
    make_dataset,
    normalize_images,
    pixel_stats,
)
from contrastive_jax.data._prompts import (
    OPENAI_IMAGENET_TEMPLATES,
    QUESTIONS,
    TEMPLATES,
    ClassPrompts,
    class_names,
    shipped_datasets,
    shipped_prompts,
    template_prompts,
    zero_shot_prompts,
)
from contrastive_jax.data._shapes import COLORS, NUMBER_WORDS, SHAPES, pair_frequencies
from contrastive_jax.data._sources import (
    ImageTextFolder,
    KeyMappedSource,
    check_source,
    default_data_dir,
    load_source,
)
from contrastive_jax.data._text_views import STOPWORDS, local_captions, weak_caption
from contrastive_jax.data._tfds_eval import (
    EvalSource,
    center_square,
    detect_keys,
    open_eval_source,
    with_class_names,
    with_shipped_prompts,
)
from contrastive_jax.data._tokenizers import (
    CLIP_BPE,
    ClipBPETokenizer,
    HFTokenizer,
    SentencePieceTokenizer,
    SiglipTokenizer,
    TokenizerSpec,
    WordTokenizer,
    check_tokenizer,
    clip_vocab_path,
    make_tokenizer,
    parse_tokenizer_spec,
    resolve_tokenizer,
    tokenizer_path,
    word_tokenizer_for,
)
from contrastive_jax.data._views import local_image_views, photometric_augment
from contrastive_jax.data._webdataset import (
    ResampledShards,
    ShardIndex,
    WebDatasetSource,
    expand_urls,
    load_index,
    write_shards,
)

__all__ = [
    "STOPWORDS",
    "local_captions",
    "weak_caption",
    "local_image_views",
    "photometric_augment",
    "AUGMENTATIONS",
    "BadImage",
    "DATA_DEFAULTS",
    "DevicePrefetch",
    "Input",
    "ParquetShards",
    "ResampledShards",
    "SKIP_KINDS",
    "SKIP_REASONS",
    "ShardIndex",
    "TokenizerSpec",
    "WebDatasetSource",
    "check_data_config",
    "check_tokenizer",
    "clip_vocab_path",
    "crop_box",
    "expand_urls",
    "has_eval_split",
    "host_fields",
    "input_from_config",
    "load_image",
    "load_index",
    "normalize_images",
    "parse_tokenizer_spec",
    "source_from_config",
    "streams",
    "with_data_defaults",
    "write_shards",
    "write_shards",
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
    "ClassPrompts",
    "shipped_datasets",
    "shipped_prompts",
    "with_shipped_prompts",
    "word_tokenizer_for",
    "zero_shot_prompts",
]
