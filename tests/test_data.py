"""Embedded datasets, tokenizers and the input pipeline, with independent oracles."""

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from contrastive_jax import data
from contrastive_jax.data import _shapes


@pytest.fixture(scope="module")
def tiny_shapes(data_dir):
    return data.load_source("shapes_count", "train", config="tiny"), data.load_source(
        "shapes_count", "test", config="tiny"
    )


def test_tiny_config_sizes(tiny_shapes):
    assert (len(tiny_shapes[0]), len(tiny_shapes[1])) == (256, 64)


def test_generation_is_deterministic(tiny_shapes, tmp_path):
    again = data.load_source("shapes_count", "train", config="tiny", data_dir=str(tmp_path))
    first = tiny_shapes[0]
    for i in range(0, 256, 17):
        assert again[i]["caption"] == first[i]["caption"]
        np.testing.assert_array_equal(again[i]["image"], first[i]["image"])


def test_connected_components_recover_the_count(tiny_shapes):
    colors = list(_shapes.COLORS)
    for split in tiny_shapes:
        for i in range(len(split)):
            record = split[i]
            rgb = np.asarray(_shapes.COLORS[colors[record["color"]]])
            mask = np.all(record["image"] == rgb, axis=-1)
            _, components = ndimage.label(mask)
            assert components == record["count"], (i, record["caption"])


def test_captions_name_count_colour_shape_and_counterfactual_differs_in_count_only(tiny_shapes):
    for i in range(len(tiny_shapes[0])):
        record = tiny_shapes[0][i]
        words = record["caption"].decode().split()
        cf = record["counterfactual_caption"].decode().split()
        assert words[0] == data.NUMBER_WORDS[record["count"] - 1]
        assert words[1] == list(data.COLORS)[record["color"]]
        assert words[2].rstrip("s") == data.SHAPES[record["shape"]]
        assert cf[0] in data.NUMBER_WORDS and cf[0] != words[0]
        assert [w.rstrip("s") for w in cf[1:]] == [w.rstrip("s") for w in words[1:]]
        assert ("and" in words) == bool(record["has_distractor"])


def test_long_tail_training_pairs_are_imbalanced():
    pairs = [(e["color"], e["shape"]) for e in (_shapes.example(1, i, zipf=1.1) for i in range(3000))]
    counts = sorted(np.unique(np.array(pairs), axis=0, return_counts=True)[1])
    assert counts[-1] > 8 * counts[0]


@pytest.mark.parametrize("config, zipf", [("default", 0.0), ("long_tail", 1.1), ("long_tail_steep", 2.0)])
def test_pair_frequencies_match_the_drawn_pairs(config, zipf):
    freq = data.pair_frequencies(config)
    assert freq.shape == (len(data.COLORS), len(data.SHAPES)) and np.isclose(freq.sum(), 1.0)
    # Zipf by hand: sorted weights are 1/k^s, normalised.
    ranks = np.arange(1, freq.size + 1)
    expected = (1.0 / ranks**zipf) / (1.0 / ranks**zipf).sum()
    np.testing.assert_allclose(np.sort(freq.ravel())[::-1], expected, rtol=1e-12)
    # The examples are drawn from these frequencies (4,000 draws: within 5 standard errors).
    n = 4000
    counts = np.zeros_like(freq)
    for i in range(n):
        e = _shapes.example(1, i, zipf=zipf)
        counts[e["color"], e["shape"]] += 1
    stderr = np.sqrt(freq * (1 - freq) / n)
    assert np.all(np.abs(counts / n - freq) < 5 * stderr + 1e-9)
    with pytest.raises(ValueError, match="unknown shapes_count builder config"):
        data.pair_frequencies("long_tails")


def test_digits_are_sklearns_digits(data_dir):
    from sklearn.datasets import load_digits

    originals = load_digits().images
    source = data.load_source("digits_captions", "test")
    assert len(source) == 359 and len(data.load_source("digits_captions", "train")) == 1438
    for i in range(0, len(source), 7):
        record = source[i]
        small = record["image"][::4, ::4, 0].astype(np.float64) * 16 / 255
        np.testing.assert_allclose(small, originals[record["source_index"]], atol=0.04)
        assert (
            data.DIGIT_WORDS[record["label"]] in record["caption"].decode()
            or str(record["label"]) in record["caption"].decode()
        )


def test_word_tokenizer_round_trip_and_rules(tmp_path):
    tok = data.word_tokenizer_for("shapes_count")
    ids = tok.encode(["Three red circles and an orange square", "one blue square"], 10)
    assert ids.shape == (2, 10) and ids.dtype == np.int32
    assert tok.decode(ids) == ["three red circles and an orange square", "one blue square"]
    assert ids[1, 0] == tok.bos_id and ids[1, 4] == tok.eos_id and np.all(ids[1, 5:] == tok.pad_id)
    truncated = tok.encode(["three red circles and an orange square"], 4)[0]
    assert list(truncated) == [tok.bos_id, tok.ids["three"], tok.ids["red"], tok.eos_id]  # EOS kept last
    assert tok.encode(["a zebra"], 5)[0, 2] == tok.unk_id
    tok.save(str(tmp_path / "vocab.json"))
    assert data.WordTokenizer.load(str(tmp_path / "vocab.json")).words == tok.words
    with pytest.raises(TypeError):
        tok.encode("not a list", 4)


def test_sentencepiece_and_hf_tokenizers(tmp_path):
    import sentencepiece
    from tokenizers import Tokenizer, models, pre_tokenizers

    texts = [f"{n} {c} shapes" for n in data.NUMBER_WORDS for c in data.COLORS] * 3
    (tmp_path / "corpus.txt").write_text("\n".join(texts))
    sentencepiece.SentencePieceTrainer.train(
        input=str(tmp_path / "corpus.txt"),
        model_prefix=str(tmp_path / "sp"),
        vocab_size=30,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
    )
    sp = data.SentencePieceTokenizer(str(tmp_path / "sp.model"))
    ids = sp.encode(["three red shapes"], 12)
    assert sp.pad_id == 30 and sp.vocab_size == 31 and ids[0, -1] == sp.pad_id
    assert sp.decode(ids) == ["three red shapes"]

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(["three", "red", "shapes"])}}
    hf = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.save(str(tmp_path / "tok.json"))
    wrapped = data.HFTokenizer(str(tmp_path / "tok.json"))
    ids = wrapped.encode(["three red shapes", "red blue"], 5)
    assert wrapped.pad_id == 0 and list(ids[1]) == [3, 1, 0, 0, 0]
    assert wrapped.decode(ids)[0] == "three red shapes"


def pipeline(source, **kw):
    args = dict(tokenizer=data.word_tokenizer_for("shapes_count"), batch_size=8, context_length=16, seed=3)
    return data.make_dataset(source, **(args | kw))


def same_batches(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_pipeline_resumes_exactly(tiny_shapes):
    it = iter(pipeline(tiny_shapes[0]))
    for _ in range(3):
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # it must survive JSON (the checkpoint's meta)
    expected = [next(it) for _ in range(2)]
    resumed = iter(pipeline(tiny_shapes[0]))
    resumed.set_state(state)
    assert all(same_batches(next(resumed), e) for e in expected)
    fresh = iter(pipeline(tiny_shapes[0]))
    assert same_batches(next(fresh), next(iter(pipeline(tiny_shapes[0]))))  # same seed, same order


def test_batches_have_the_documented_fields(tiny_shapes):
    batch = next(iter(pipeline(tiny_shapes[0], image_size=32)))
    assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["tokens"].shape == batch["cf_tokens"].shape == (8, 16)
    for key in ("index", "count", "color", "shape"):
        assert batch[key].shape == (8,)


def test_epochs_reshuffle_and_processes_are_disjoint(tiny_shapes):
    source = tiny_shapes[0]
    one_epoch = lambda p, n: np.concatenate(
        [
            b["index"]
            for b in pipeline(source, num_epochs=1, drop_remainder=False, process_index=p, process_count=n)
        ]
    )
    whole = one_epoch(0, 1)
    assert sorted(whole) == list(range(256))  # unique ids, whole epoch
    shards = [one_epoch(p, 2) for p in range(2)]
    assert not set(shards[0]) & set(shards[1]) and len(shards[0]) + len(shards[1]) == 256
    two = np.concatenate([b["index"] for b in pipeline(source, num_epochs=2, drop_remainder=False)])
    assert sorted(two[:256]) == sorted(two[256:]) and not np.array_equal(two[:256], two[256:])


def test_image_text_folder(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8)).save(tmp_path / f"im{i}.png")
    (tmp_path / "caps.csv").write_text(
        "filename,caption\n" + "".join(f"im{i}.png,photo {i}\n" for i in range(3))
    )
    (tmp_path / "caps.jsonl").write_text(
        "".join(json.dumps({"filename": f"im{i}.png", "caption": f"x{i}"}) + "\n" for i in range(3))
    )
    folder = data.ImageTextFolder(str(tmp_path), "caps.csv")
    assert len(folder) == 3 and folder[2]["caption"] == "photo 2" and folder[2]["image"][0, 0, 0] == 80
    assert data.ImageTextFolder(str(tmp_path), "caps.jsonl")[1]["caption"] == "x1"
    batch = next(
        iter(
            data.make_dataset(
                folder,
                tokenizer=data.WordTokenizer.build(["photo 0"]),
                batch_size=3,
                context_length=4,
                image_size=8,
                shuffle=False,
            )
        )
    )
    assert batch["image"].shape == (3, 8, 8, 3)
    (tmp_path / "bad.csv").write_text("name,text\na,b\n")
    with pytest.raises(ValueError):
        data.ImageTextFolder(str(tmp_path), "bad.csv")


def test_zero_shot_prompts_and_errors(data_dir):
    prompts = data.zero_shot_prompts("shapes_count", "count")
    assert list(prompts) == list(data.NUMBER_WORDS)
    assert "three green triangles" in prompts["three"] and all(
        p.startswith("three ") for p in prompts["three"]
    )
    assert list(data.zero_shot_prompts("digits_captions", "digit")) == list(data.DIGIT_WORDS)
    with pytest.raises(ValueError):
        data.zero_shot_prompts("shapes_count", "size")
    with pytest.raises(ValueError):
        data.load_source("shapes_count", "validation")
    with pytest.raises(ValueError):
        data.make_dataset([], tokenizer=None, batch_size=0, context_length=4)
