"""Local views (clip-rocket's CL2L / BarLIP input): the pipeline's extra crops and captions, the
photometric ops against per-pixel float64 formulas, and the EDA text ops' semantics."""

import colorsys
import itertools

import ml_collections
import numpy as np
import pytest
from PIL import Image, ImageFilter

from contrastive_jax import data
from contrastive_jax.data import _text_views as tv
from contrastive_jax.data import _views as views
from contrastive_jax.train import ConfigError
from tests import shards_common as sc

SIZE, CONTEXT = 16, 12
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2


@pytest.fixture(scope="module")
def records():
    """JPEGs large enough for reduced-size decoding (96 x 80 >= 2 x 16) and small ones (24 x 20),
    a PNG, a decoded array and the corrupt JPEG of `photo_records` (record 5)."""
    out = sc.photo_records(8, size=(96, 80))
    out[1]["image"] = sc.jpeg(sc.photo(1, (24, 20)))
    out[2]["image"] = sc.png(sc.photo(2, (40, 30)))
    out[3]["image"] = sc.photo(3, (50, 36))
    return out


@pytest.fixture(scope="module")
def tokenizer():
    return data.make_tokenizer("clip_bpe")


def batches(records, tokenizer, **kw):
    args = dict(tokenizer=tokenizer, batch_size=3, context_length=CONTEXT, image_size=SIZE, normalize=False,
                seed=1, shuffle=False, num_epochs=1, drop_remainder=False)  # fmt: skip
    return list(data.make_dataset(records, **(args | kw)))


def colourful(seed=0, shape=(6, 7)):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


# --- the pipeline -------------------------------------------------------------------------------


@pytest.mark.parametrize("augment", ["none", "rrc"])
def test_local_views_leave_the_global_batches_bit_identical(records, tokenizer, augment):
    before = batches(records, tokenizer, augment=augment, flip=True)
    same = batches(records, tokenizer, augment=augment, flip=True, local_views=0)
    with_views = batches(records, tokenizer, augment=augment, flip=True, local_views=2)
    assert len(before) == len(same) == len(with_views) == 3
    for old, zero, new in zip(before, same, with_views):
        assert zero.keys() == old.keys() and all(np.array_equal(zero[k], old[k]) for k in old)
        assert new.keys() == old.keys() | {"local_image", "local_tokens"}
        for key in ("image", "tokens", "index", "skipped"):
            np.testing.assert_array_equal(new[key], old[key])


def test_local_views_have_the_documented_shapes_and_only_in_training(records, tokenizer):
    config = ml_collections.ConfigDict(
        dict(name="folder", image_size=SIZE, context_length=CONTEXT, local_views=3)
    )  # fmt: skip
    train = data.input_from_config(config, "train", batch_size=2, tokenizer=tokenizer, source=records)
    batch = next(iter(train.dataset))
    assert batch["local_image"].shape == (2, 3, SIZE, SIZE, 3) and batch["local_image"].dtype == np.uint8
    assert batch["local_tokens"].shape == (2, 3, CONTEXT) and batch["local_tokens"].dtype == np.int32
    # Each local caption is tokenized as the global one: start token first, end token present.
    assert np.all(batch["local_tokens"][..., 0] == batch["tokens"][:, None, 0])
    assert np.all((batch["local_tokens"] == tokenizer.encode(["x"], 4)[0, 2]).any(axis=-1))
    evaluation = data.input_from_config(config, "test", batch_size=2, tokenizer=tokenizer, source=records)
    assert "local_image" not in next(iter(evaluation.dataset))
    normalized = batches(records, tokenizer, local_views=2, normalize=True)[0]["local_image"]
    assert normalized.dtype == np.float32 and -1 <= normalized.min() and normalized.max() <= 1


def test_local_views_are_reproducible_and_differ_across_seeds_and_epochs(records, tokenizer):
    first = batches(records, tokenizer, local_views=2)
    again = batches(records, tokenizer, local_views=2)
    other_seed = batches(records, tokenizer, local_views=2, seed=2)
    for a, b in zip(first, again):
        assert all(np.array_equal(a[k], b[k]) for k in ("local_image", "local_tokens"))
    assert not np.array_equal(first[0]["local_image"], other_seed[0]["local_image"])
    two_epochs = batches(records, tokenizer, local_views=2, num_epochs=2, batch_size=7)
    assert two_epochs[0]["index"].tolist() == two_epochs[1]["index"].tolist()  # no shuffle: same order
    assert not np.array_equal(two_epochs[0]["local_image"], two_epochs[1]["local_image"])
    assert not np.array_equal(first[0]["local_image"][:, 0], first[0]["local_image"][:, 1])  # n draws


def test_bad_images_are_still_skipped_with_their_reason(records, tokenizer):
    got = batches(records, tokenizer, local_views=2)
    assert sorted(np.concatenate([b["index"] for b in got]).tolist()) == [0, 1, 2, 3, 4, 6, 7]
    counts = dict(zip(data.SKIP_KINDS, sum(b["skipped"].sum(axis=0) for b in got).tolist()))
    assert counts["corrupt_image"] == 1 and sum(counts.values()) == 1
    assert any("corrupt_image|" in str(d) for b in got for d in b["skip_detail"])
    # Under 30 x 30 pixels only the 24 x 20 JPEG and the array pass (arrays are not capped); a copy
    # of the small JPEG at the end carries the count of those dropped before it.
    capped = batches(records + [records[1]], tokenizer, local_views=2, max_pixels=30 * 30)
    assert sorted(np.concatenate([b["index"] for b in capped]).tolist()) == [1, 3, 8]
    counts = dict(zip(data.SKIP_KINDS, sum(b["skipped"].sum(axis=0) for b in capped).tolist()))
    assert counts["too_large"] == 6 and sum(counts.values()) == 6  # the cut JPEG's header still reads


def test_the_config_key_is_checked(records, tokenizer):
    base = dict(name="folder", folder="imgs", captions="caps.csv")
    data.check_data_config(ml_collections.ConfigDict(base | {"local_views": 2}))
    data.check_data_config(ml_collections.ConfigDict(base))  # absent: the default, 0
    assert data.DATA_DEFAULTS["local_views"] == 0
    for bad in (-1, "2", 1.5, True):
        with pytest.raises(ConfigError, match=r"config\.data\.local_views .*non-negative integer"):
            data.check_data_config(ml_collections.ConfigDict(base | {"local_views": bad}))
    with pytest.raises(ConfigError, match="image_size"):
        batches(records, tokenizer, local_views=2, image_size=None)


def test_dropping_stopwords_changes_only_the_global_tokens_and_only_in_training(records, tokenizer):
    records = [dict(r, counterfactual_caption=f"photo of {i} temples") for i, r in enumerate(records)]
    plain = batches(records, tokenizer, local_views=2)
    dropped = batches(records, tokenizer, local_views=2, drop_stopwords_prob=1.0)
    for old, new in zip(plain, dropped):
        for key in ("image", "local_image", "local_tokens", "cf_tokens", "index", "skipped"):
            np.testing.assert_array_equal(new[key], old[key])
        # "photo 3 of a temple" -> "photo 3 temple": "of" and "a" are on NLTK's list
        want = [" ".join(records[i]["caption"].split()[:2] + records[i]["caption"].split()[-1:])
                for i in new["index"]]  # fmt: skip
        np.testing.assert_array_equal(new["tokens"], tokenizer.encode(want, CONTEXT))
        assert not np.array_equal(new["tokens"], old["tokens"])
    config = ml_collections.ConfigDict(
        dict(name="folder", image_size=SIZE, context_length=CONTEXT, drop_stopwords_prob=1.0)
    )  # fmt: skip
    evaluation = data.input_from_config(config, "test", batch_size=3, tokenizer=tokenizer, source=records)
    first = next(iter(evaluation.dataset))
    want = [records[i]["caption"] for i in first["index"]]
    np.testing.assert_array_equal(first["tokens"], tokenizer.encode(want, CONTEXT))


def test_weak_caption_drops_stopwords_at_its_rate_and_never_empties_a_caption():
    rng = np.random.default_rng(0)
    assert data.weak_caption("a  photo of\tthe cat", rng, 0.0) == "a  photo of\tthe cat"  # as it was
    assert data.weak_caption("a  photo of\tthe cat", rng, 1.0) == "photo cat"
    assert data.weak_caption("of the", rng, 1.0) == "of the"  # nothing would remain
    dropped = np.mean([data.weak_caption("the cat", rng, 0.8) == "cat" for _ in range(5000)])
    assert 0.78 < dropped < 0.82
    base = dict(name="folder", folder="imgs", captions="caps.csv")
    data.check_data_config(ml_collections.ConfigDict(base | {"drop_stopwords_prob": 0.8}))
    assert data.DATA_DEFAULTS["drop_stopwords_prob"] == 0.0
    for bad in (-0.1, 1.5, "0.8", True):
        with pytest.raises(ConfigError, match=r"config\.data\.drop_stopwords_prob .*probability in \[0, 1\]"):
            data.check_data_config(ml_collections.ConfigDict(base | {"drop_stopwords_prob": bad}))
        with pytest.raises(ConfigError, match=r"drop_stopwords_prob .*probability"):
            batches(records_for_check(), None, drop_stopwords_prob=bad)


def records_for_check():
    return sc.photo_records(2, size=(24, 20))


# --- the image ops ------------------------------------------------------------------------------


def assert_within_one_level(got, expected):
    assert got.dtype == np.uint8 and got.shape == expected.shape
    assert np.abs(got.astype(np.int64) - np.clip(np.rint(expected), 0, 255)).max() <= 1


@pytest.mark.parametrize("factor", [0.6, 0.85, 1.3])
def test_brightness_contrast_saturation_are_torchvisions_blends(factor):
    pixels = colourful()
    x = pixels.astype(np.float64)
    gray = x @ LUMA
    assert_within_one_level(views.adjust_brightness(pixels, factor), x * factor)
    assert_within_one_level(views.adjust_contrast(pixels, factor), factor * x + (1 - factor) * gray.mean())
    assert_within_one_level(
        views.adjust_saturation(pixels, factor), factor * x + (1 - factor) * gray[..., None]
    )


@pytest.mark.parametrize("shift", [-0.1, 0.03, 0.25, 0.5])
def test_hue_shift_is_colorsys_per_pixel(shift):
    pixels = colourful(1)
    pixels[0, :4] = [[9, 9, 9], [200, 200, 5], [5, 200, 200], [200, 5, 200]]  # grey and tied maxima
    expected = np.empty(pixels.shape)
    for i, j in itertools.product(*map(range, pixels.shape[:2])):
        h, s, v = colorsys.rgb_to_hsv(*(pixels[i, j] / 255.0))
        expected[i, j] = np.array(colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)) * 255
    assert_within_one_level(views.adjust_hue(pixels, shift), expected)


def test_color_jitter_draws_brightness_in_its_range():
    # A uniform grey image: contrast, saturation and hue leave it as it is; brightness scales it.
    grey = np.full((2, 2, 3), 150, np.uint8)
    ratios = [views.color_jitter(grey, np.random.default_rng(s))[0, 0, 0] / 150 for s in range(300)]
    assert 0.6 - 1 / 150 <= min(ratios) < 0.65 and 1.35 < max(ratios) <= 1.4 + 1 / 150


def test_grayscale_blur_and_flip():
    pixels = colourful(2, (24, 24))
    gray = views.grayscale(pixels)
    assert gray.shape == pixels.shape and np.all(gray == gray[..., :1])
    assert_within_one_level(gray[..., 0], pixels.astype(np.float64) @ LUMA)
    variances = [views.gaussian_blur(pixels, sigma).astype(np.float64).var() for sigma in (0.1, 1.0, 2.0)]
    assert (
        pixels.var() * 0.8 < variances[0]
        and variances[1] < 0.5 * pixels.var()
        and variances[2] < variances[1]
    )
    expected = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius=1.0))
    np.testing.assert_array_equal(views.gaussian_blur(pixels, 1.0), np.asarray(expected))
    np.testing.assert_array_equal(views.horizontal_flip(pixels), pixels[:, ::-1])


def test_local_image_views_crop_widely_and_apply_grayscale_at_its_rate():
    photo = sc.photo(0, (96, 80))
    boxes = [data.crop_box("rrc_local", np.random.default_rng(s), 96, 80) for s in range(300)]
    areas = np.array([w * h for _, _, w, h in boxes]) / (96 * 80)
    assert areas.min() < 0.15 and areas.max() > 0.9  # scale (0.08, 1), not the "rrc" (0.9, 1)
    stack = views.local_image_views(
        photo, count=400, size=SIZE, rng=np.random.default_rng(0), max_pixels=10**6
    )
    assert stack.shape == (400, SIZE, SIZE, 3) and stack.dtype == np.uint8
    grey = np.mean([np.all(v == v[..., :1]) for v in stack])
    assert 0.15 < grey < 0.25  # RandomGrayscale(p=0.2); jitter's saturation >= 0.6 never greys


# --- the text ops -------------------------------------------------------------------------------


def test_stopword_removal_removes_exactly_the_listed_words():
    assert len(tv.STOPWORDS) == 179 and {"the", "any", "wouldn't", "ma", "y"} <= tv.STOPWORDS
    words = "The cat and a DOG don't sit on the mat, ever dont".split()
    assert tv.remove_stopwords(words) == ["cat", "DOG", "sit", "mat,", "ever", "dont"]
    assert tv.remove_stopwords("photo of temple".split()) == ["photo", "temple"]
    assert tv.local_caption("", np.random.default_rng(0)) == ""
    assert all(tv.local_caption("of the", np.random.default_rng(s)) in ("of the", "the of", "of", "the")
               for s in range(50))  # fmt: skip


def test_random_swap_swaps_two_positions_or_gives_up_as_textaugment():
    words = "one two three four five".split()
    changed = 0
    for seed in range(300):
        out = tv.random_swap(words, np.random.default_rng(seed))
        assert sorted(out) == sorted(words)
        differing = sum(a != b for a, b in zip(out, words))
        assert differing in (0, 2)
        changed += differing == 2
    assert changed >= 295  # gives up with probability 5 ** -3
    gave_up = np.mean(
        [tv.random_swap(["a", "b"], np.random.default_rng(s)) == ["a", "b"] for s in range(4000)]
    )
    assert 0.10 < gave_up < 0.15  # 2 ** -3: the second position hit the first three times
    assert tv.random_swap(["solo"], np.random.default_rng(0)) == ["solo"]


def test_random_deletion_keeps_a_nonempty_subsequence_in_order():
    words = [f"w{i}" for i in range(20)]
    kept = []
    for seed in range(200):
        out = tv.random_deletion(words, np.random.default_rng(seed))
        assert out and [w for w in words if w in out] == out
        kept.append(len(out))
    assert 17.4 < np.mean(kept) < 18.6  # each word dropped with p = 0.1
    assert tv.random_deletion(["solo"], np.random.default_rng(0)) == ["solo"]
    everything = [tv.random_deletion(["a", "b", "c"], np.random.default_rng(s), p=1.0) for s in range(60)]
    assert all(len(out) == 1 for out in everything) and {o[0] for o in everything} == {"a", "b", "c"}


def test_text_ops_and_stopword_removal_come_at_clip_rockets_rates():
    rng = np.random.default_rng(0)
    names = [tv.draw_text_op(rng).__name__ for _ in range(20000)]
    for name, weight in (("synonym_replacement", 0.4), ("random_swap", 0.4), ("random_deletion", 0.2)):
        assert abs(names.count(name) / len(names) - weight) < 0.015
    # "the" survives when stopwords are kept (p 0.2) and deletion (p 0.2) does not drop it (0.1).
    kept_the = np.mean(["the" in tv.local_caption("the cat sat", rng).split() for _ in range(5000)])
    assert 0.17 < kept_the < 0.22
