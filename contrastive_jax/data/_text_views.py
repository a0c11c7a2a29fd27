"""Local caption views: clip-rocket's strong text augmentation (`SimpleTokenizer.strong_augment`).

Fini et al. 2023 (facebookresearch/clip-rocket, `tokenizer.py`, with `main.py`'s defaults) pair
each local image view with a strongly augmented caption:

1. with probability 0.8, drop the English stopwords (`STOPWORDS`, compared lower-cased), unless
   nothing would remain;
2. one EDA op (Wei & Zou 2019, as textaugment's `EDA` implements it), drawn with relative
   weights synonym_replacement 0.4, random_swap 0.4, random_deletion 0.2 (`random.choices`):
   * synonym_replacement: WordNet synonyms, which are not available offline here, so this draw
     leaves the words unchanged (rejoined by single spaces, as textaugment rejoins them);
   * random_swap (n=1): swap the words at two random positions; as textaugment, the second
     position is redrawn while it equals the first, at most three times, after which the words
     stay as they are (probability len(words) ** -3);
   * random_deletion (p=0.1): drop each word with probability 0.1; a single word is kept, and
     if every word was dropped, one random word of the caption is kept;
3. an empty result keeps the caption as it was.

The global caption gets only step 1, at a rate of its own (`weak_caption`, the pipeline's
`drop_stopwords_prob`; clip-rocket's `weak_augment`, 0.8 in its runs, 0 by default here).

Words are the caption split on whitespace, joined back with single spaces. clip-rocket splits
with NLTK's `word_tokenize` before removing stopwords (punctuation and "n't" become words of
their own), and textaugment on whitespace for the EDA ops. Every draw comes from the NumPy
generator passed in (clip-rocket uses Python's global `random`).

References:
  Fini et al. 2023, https://arxiv.org/abs/2305.08675;
  Wei & Zou 2019, "EDA: Easy Data Augmentation Techniques", https://arxiv.org/abs/1901.11196.
"""

from __future__ import annotations

import numpy as np

# NLTK's English stopword list (nltk_data corpora/stopwords/english, 179 words), which
# clip-rocket loads with `nltk.corpus.stopwords.words("english")`.
STOPWORDS = frozenset(
    """
    i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself
    yourselves he him his himself she she's her hers herself it it's its itself they them their
    theirs themselves what which who whom this that that'll these those am is are was were be
    been being have has had having do does did doing a an the and but if or because as until
    while of at by for with about against between into through during before after above below
    to from up down in out on off over under again further then once here there when where why
    how all any both each few more most other some such no nor not only own same so than too
    very s t can will just don don't should should've now d ll m o re ve y ain aren aren't
    couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma
    mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren
    weren't won won't wouldn wouldn't
    """.split()
)
REMOVE_STOPWORDS_PROB = 0.8
SWAP_REDRAWS, DELETION_PROB = 3, 0.1


def remove_stopwords(words: list[str]) -> list[str]:
    """The words whose lower case is not in `STOPWORDS`, in order."""
    return [word for word in words if word.lower() not in STOPWORDS]


def synonym_replacement(words: list[str], rng: np.random.Generator) -> list[str]:
    """EDA's synonym replacement without WordNet: the words unchanged (see the module docstring)."""
    del rng
    return list(words)


def random_swap(words: list[str], rng: np.random.Generator) -> list[str]:
    """textaugment's `EDA.random_swap(sentence, n=1)`: swap two random positions, the second
    redrawn up to `SWAP_REDRAWS` times while it equals the first, else no swap."""
    words = list(words)
    if not words:
        return words
    first = int(rng.integers(len(words)))
    for _ in range(SWAP_REDRAWS):
        second = int(rng.integers(len(words)))
        if second != first:
            words[first], words[second] = words[second], words[first]
            break
    return words


def random_deletion(words: list[str], rng: np.random.Generator, p: float = DELETION_PROB) -> list[str]:
    """textaugment's `EDA.random_deletion(sentence, p)`: keep each word when u > p (u ~ U[0, 1));
    one word is kept as it is; if none survives, one word drawn at random."""
    if len(words) <= 1:
        return list(words)
    kept = [word for word, u in zip(words, rng.random(len(words))) if u > p]
    return kept or [words[int(rng.integers(len(words)))]]


# (op, relative weight): clip-rocket's main.py defaults for random.choices
TEXT_OPS = ((synonym_replacement, 0.4), (random_swap, 0.4), (random_deletion, 0.2))


def draw_text_op(rng: np.random.Generator):
    """One of `TEXT_OPS`' functions, with probability its weight over their sum."""
    weights = np.array([weight for _, weight in TEXT_OPS])
    return TEXT_OPS[int(rng.choice(len(TEXT_OPS), p=weights / weights.sum()))][0]


def local_caption(caption: str, rng: np.random.Generator) -> str:
    """One strongly augmented copy of `caption` (the module docstring's steps 1-3)."""
    words = caption.split()
    if not words:
        return caption
    if rng.random() < REMOVE_STOPWORDS_PROB:
        words = remove_stopwords(words) or words
    augmented = draw_text_op(rng)(words, rng)
    return " ".join(augmented) if augmented else caption


def weak_caption(caption: str, rng: np.random.Generator, prob: float) -> str:
    """clip-rocket's weak text augmentation (`SimpleTokenizer.weak_augment`) of the global
    caption: with probability `prob`, its words without the `STOPWORDS`, unless none would
    remain; otherwise the caption as it is. One draw from `rng`."""
    if rng.random() >= prob:
        return caption
    words = remove_stopwords(caption.split())
    return " ".join(words) if words else caption


def local_captions(caption: str, *, count: int, rng: np.random.Generator) -> list[str]:
    """`count` independent `local_caption`s of `caption`, drawn in turn from `rng`."""
    return [local_caption(caption, rng) for _ in range(count)]
