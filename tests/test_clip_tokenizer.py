"""CLIP's BPE and Hugging Face tokenizer files: ids equal open_clip's and transformers' tokenizers."""

import itertools
import json
import os
import sys

import numpy as np
import pytest

from contrastive_jax import data
from contrastive_jax.data import _digits, _shapes, _tokenizers
from tests import openclip_tokenizer_ref as ref

needs_open_clip = pytest.mark.skipif(
    ref.open_clip_tokenizer() is None,
    reason="open_clip's tokenizer (open_clip_torch, torch, ftfy, regex) is not installed",
)

EDGE_CASES = [
    "",
    " ",
    "   leading and trailing   ",
    "tabs\tand\nnew\r\nlines  and   runs",
    "A Photo Of A CAT.",
    "it's, isn't, we're, they've, I'm, we'll, she'd; IT'S DON'T",
    "rock 'n' roll, 'quoted' and ''doubled''",
    "!!! ??? ... --- ,,, ;;; ::: (((brackets))) [x] {y} <z>",
    "e-mail: someone@example.com, url https://example.com/a_b?c=1&d=2#frag",
    "3.14159 2,000,000 1st 22nd 007 10% $5 #1 ½ ² Ⅻ ٣",
    "café naïve résumé Ångström façade Über straße ÉCOLE",
    "東京タワー 北京 서울 Москва Αθήνα ΣΊΣΥΦΟΣ עברית العربية हिन्दी",
    "emoji 🐶🐱 👍🏽 👨‍👩‍👧 🇫🇷 ❤️",
    "&amp; &lt;b&gt; &quot;q&quot; &#39;s &amp;amp; &nbsp;x &eacute;",
    "“curly” ‘single’ – en — em … ellipsis ﬁ ligature ＦＵＬＬ width",
    "control\x00chars\x07 zero\u200bwidth soft\u00adhyphen",
    "<start_of_text> special <end_of_text> tokens",
    "a" * 200,
    " ".join(["a long caption that goes on"] * 30),
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
]


def embedded_captions() -> list[str]:
    """Every caption the embedded datasets generate, and their zero-shot prompts."""
    distractors = [None, *itertools.product(_shapes.COLORS, _shapes.SHAPES)]
    shapes = [
        _shapes.caption(count, color, shape, distractor)
        for count, color, shape, distractor in itertools.product(
            range(1, 11), _shapes.COLORS, _shapes.SHAPES, distractors
        )
    ]
    digits = [_digits.digit_caption(d, t) for d in range(10) for t in range(len(_digits.TEMPLATES))]
    prompts = [
        p
        for name, questions in data.QUESTIONS.items()
        for q in questions
        for ps in data.zero_shot_prompts(name, q).values()
        for p in ps
    ]
    openai = [p for ps in data.template_prompts(data.COLORS, "openai").values() for p in ps]
    return shapes + digits + prompts + openai


CAPTIONS = embedded_captions()


@pytest.fixture(scope="module")
def clip():
    return data.ClipBPETokenizer()


@pytest.fixture(scope="module")
def hf_clip(tmp_path_factory):
    """transformers' CLIPTokenizer from open_clip's vocabulary, and its tokenizer.json saved alone."""
    directory = tmp_path_factory.mktemp("hf_clip")
    reference = ref.hf_clip_tokenizer(str(directory))
    if reference is None:
        pytest.skip("transformers is not installed")
    reference.save_pretrained(str(directory / "saved"))
    (directory / "tokenizer.json").write_bytes((directory / "saved" / "tokenizer.json").read_bytes())
    return reference, directory


@needs_open_clip
def test_ids_equal_open_clip_on_captions_and_edge_cases(clip):
    texts = CAPTIONS + EDGE_CASES
    assert len(set(texts)) >= 1000
    ids = clip.encode(texts)
    assert ids.shape == (len(texts), 77) and ids.dtype == np.int32
    np.testing.assert_array_equal(ids, ref.open_clip_tokenize(texts, 77))
    # A short context truncates most captions: the end token stays last.
    np.testing.assert_array_equal(clip.encode(texts, 6), ref.open_clip_tokenize(texts, 6))


@needs_open_clip
def test_special_ids_padding_and_truncation(clip):
    assert (clip.vocab_size, clip.bos_id, clip.eos_id, clip.pad_id) == (49408, 49406, 49407, 0)
    empty, short, long = clip.encode(["", "a photo of a cat.", "cat " * 100])
    assert list(empty[:3]) == [49406, 49407, 0] and not empty[2:].any()
    assert (
        list(short[:7]) == [49406, 320, 1125, 539, 320, 2368, 269]
        and short[7] == 49407
        and not short[8:].any()
    )
    assert long[0] == 49406 and long[-1] == 49407 and (long[1:-1] == 2368).all()
    # "!" is id 0, like the padding; the end token is still each row's largest id (open_clip's pooling).
    ids = clip.encode(["hello!", "!", "wow!!! ok"])
    assert (ids == 0).sum(axis=1).min() > 0
    assert (ids.argmax(axis=1) == (ids == clip.eos_id).argmax(axis=1)).all()


@needs_open_clip
def test_default_context_length_and_file_path():
    short = data.ClipBPETokenizer(ref.vocab_path(), context_length=16)
    assert short.encode(["a photo"]).shape == (1, 16)
    assert short.encode(["a photo"], 5).shape == (1, 5)
    with pytest.raises(TypeError):
        short.encode("not a list")


@needs_open_clip
def test_decode(clip):
    assert clip.decode(clip.encode(CAPTIONS[:500])) == CAPTIONS[:500]
    assert clip.decode(clip.encode(["A  Photo of a CAT.", "café 東京 🐶", ""])) == [
        "a photo of a cat .",
        "café 東京 🐶",
        "",
    ]
    assert clip.decode(clip.encode(["one two three four"], 4)) == ["one two"]


def test_the_packaged_vocabulary_is_clips_and_a_missing_one_is_named(tmp_path):
    path = data.clip_vocab_path()
    assert path.startswith(os.path.dirname(data.__file__)) and os.path.isfile(path)
    if ref.vocab_path() is not None:  # byte for byte the file open_clip ships
        assert open(path, "rb").read() == open(ref.vocab_path(), "rb").read()
    with pytest.raises(FileNotFoundError, match="vocab_path"):
        data.ClipBPETokenizer(str(tmp_path / "missing.txt.gz"))


def test_missing_ftfy_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "ftfy", None)
    with pytest.raises(ImportError, match="pip install ftfy"):
        _tokenizers.clip_clean("text")


@needs_open_clip
def test_hf_tokenizer_json_equals_transformers(hf_clip, clip):
    reference, directory = hf_clip
    texts = CAPTIONS + EDGE_CASES
    expected = ref.hf_ids(reference, texts, 77)
    for path in (
        directory / "saved" / "tokenizer.json",
        directory / "tokenizer.json",
    ):  # with, without its config
        tok = data.HFTokenizer(str(path))
        assert (tok.vocab_size, tok.pad_id) == (49408, 49407)
        np.testing.assert_array_equal(tok.encode(texts, 77), expected)
        np.testing.assert_array_equal(tok.encode(texts, 6), ref.hf_ids(reference, texts, 6))
    assert tok.decode(tok.encode(EDGE_CASES, 77)) == reference.batch_decode(
        expected[-len(EDGE_CASES) :], skip_special_tokens=True
    )
    # On the embedded captions (no entities or text that ftfy changes) HF's and open_clip's ids agree
    # up to the padding: HF pads with the end token, open_clip with 0.
    hf_ids, clip_ids = tok.encode(CAPTIONS, 77), clip.encode(CAPTIONS)
    np.testing.assert_array_equal(np.where(clip_ids == 0, 49407, clip_ids), hf_ids)


def _word_level(path, vocab, **fields):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel(vocab, unk_token="unk"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if "eos" in vocab:
        tok.post_processor = processors.TemplateProcessing(
            single="$A eos", special_tokens=[("eos", vocab["eos"])]
        )
    if "padding" in fields:
        tok.enable_padding(pad_id=fields["padding"], pad_token="x", length=9)
    if "truncation" in fields:
        tok.enable_truncation(fields["truncation"])
    path.mkdir()
    tok.save(str(path / "tokenizer.json"))
    for name in ("tokenizer_config", "special_tokens_map"):
        if name in fields:
            (path / f"{name}.json").write_text(json.dumps({"pad_token": fields[name]}))
    return data.HFTokenizer(str(path / "tokenizer.json"))


def test_hf_padding_rules(tmp_path):
    vocab = {"unk": 0, "a": 1, "b": 2, "[PAD]": 3, "eos": 4, "x": 5}
    assert _word_level(tmp_path / "file", vocab, padding=5, truncation=2).encode(["a b a"], 5).tolist() == [
        [1, 2, 1, 4, 5]
    ]  # the file's padding id, but its padding length and truncation are ignored
    assert _word_level(tmp_path / "config", vocab, tokenizer_config={"content": "b"}).pad_id == 2
    assert _word_level(tmp_path / "map", vocab, special_tokens_map="a").pad_id == 1
    assert _word_level(tmp_path / "named", vocab).pad_id == 3
    no_pad = {k: v for k, v in vocab.items() if k != "[PAD]"}
    assert _word_level(tmp_path / "end", no_pad).encode(["a a a"], 6).tolist() == [[1, 1, 1, 4, 4, 4]]
    extra = _word_level(tmp_path / "extra", {"unk": 0, "a": 1})
    assert (extra.pad_id, extra.vocab_size) == (2, 3)
    assert extra.encode(["a b"], 3).tolist() == [[1, 0, 2]]


@needs_open_clip
def test_make_tokenizer(tmp_path, hf_clip):
    import sentencepiece

    assert isinstance(data.make_tokenizer("word", "shapes_count"), data.WordTokenizer)
    assert isinstance(data.make_tokenizer("clip_bpe"), data.ClipBPETokenizer)
    assert isinstance(data.make_tokenizer(ref.vocab_path()), data.ClipBPETokenizer)
    assert isinstance(data.make_tokenizer(str(hf_clip[1] / "tokenizer.json")), data.HFTokenizer)
    (tmp_path / "corpus.txt").write_text("\n".join(CAPTIONS[:300]))
    sentencepiece.SentencePieceTrainer.train(
        input=str(tmp_path / "corpus.txt"),
        model_prefix=str(tmp_path / "sp"),
        vocab_size=40,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    assert isinstance(data.make_tokenizer(str(tmp_path / "sp.model")), data.SentencePieceTokenizer)
    for spec in ("bpe", "vocab.txt", "clip", "siglip:vocab.json"):
        with pytest.raises(ValueError, match="use 'word', 'clip_bpe'"):
            data.make_tokenizer(spec)
    with pytest.raises(ValueError, match="vocabulary only for the embedded datasets.*clip_bpe"):
        data.make_tokenizer("word", "imagenet")
    config = {"name": "shapes_count", "tokenizer": "word"}  # a data config names both
    assert data.make_tokenizer(config).words == data.make_tokenizer("word", "shapes_count").words


def _siglip_spiece(path, model_type="unigram", dummy_prefix=True):
    """A SentencePiece model laid out as SigLIP's spiece.model (pad 0, </s> 1, <unk> 2, no <s>)."""
    import sentencepiece

    path.mkdir(parents=True, exist_ok=True)
    (path / "corpus.txt").write_text("\n".join(c.replace("\n", " ") for c in CAPTIONS))
    sentencepiece.SentencePieceTrainer.train(
        input=str(path / "corpus.txt"),
        model_prefix=str(path / "spiece"),
        vocab_size=250,
        hard_vocab_limit=False,
        model_type=model_type,
        add_dummy_prefix=dummy_prefix,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    return str(path / "spiece.model")


@pytest.mark.parametrize("model_type, dummy_prefix", [("unigram", True), ("bpe", True), ("unigram", False)])
def test_siglip_tokenizer_equals_transformers(tmp_path, model_type, dummy_prefix):
    """Every caption, prompt, template and edge case: the ids of transformers' SiglipTokenizer."""
    transformers = pytest.importorskip("transformers")
    model = _siglip_spiece(tmp_path, model_type, dummy_prefix)
    reference = transformers.SiglipTokenizer(vocab_file=model)
    ours = data.make_tokenizer(f"siglip:{model}")
    assert isinstance(ours, data.SiglipTokenizer) and ours.pad_id == ours.eos_id == 1
    assert len(CAPTIONS) >= 1000
    for length in (8, 64):  # 8: most captions cut, </s> kept last
        want = reference(CAPTIONS, padding="max_length", max_length=length, truncation=True)["input_ids"]
        got = ours.encode(CAPTIONS, length)
        mismatched = [text for text, w, g in zip(CAPTIONS, want, got.tolist()) if w != g]
        assert not mismatched, mismatched[:5]
    # Punctuation and case go, as in big_vision's canonicalize_text; decoding gives the clean text.
    assert ours.decode(ours.encode(["A Photo, of: a CAT!"], 16)) == ["a photo of a cat"]


def test_tokenizer_specs_resolve_relative_to_their_directory(tmp_path):
    (tmp_path / "spiece.model").write_bytes(b"")
    assert data.resolve_tokenizer("siglip:spiece.model", str(tmp_path)) == f"siglip:{tmp_path}/spiece.model"
    assert data.resolve_tokenizer("spiece.model", str(tmp_path)) == f"{tmp_path}/spiece.model"
    assert data.resolve_tokenizer("clip_bpe", str(tmp_path)) == "clip_bpe"
    assert data.resolve_tokenizer("other.model", str(tmp_path)) == "other.model"
    assert data.tokenizer_path("siglip:/a/spiece.model") == "/a/spiece.model"
    assert data.tokenizer_path("word") is None


def test_clip_bpe_works_from_a_plain_install_without_open_clip(tmp_path):
    """The wheel carries CLIP's vocabulary: installed from it, with open_clip unimportable,
    `make_tokenizer("clip_bpe")` gives the ids of the tested tokenizer."""
    import shutil
    import subprocess
    import zipfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(root, name), source / name)
    for package in ("contrastive_jax", "experiments"):
        shutil.copytree(
            os.path.join(root, package),
            source / package,
            ignore=shutil.ignore_patterns("__pycache__", "results"),
        )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    site = tmp_path / "site"
    with zipfile.ZipFile(next((tmp_path / "dist").glob("contrastive_jax-*.whl"))) as wheel:
        wheel.extractall(site)
    texts = ["a photo of a cat", "Two dogs playing in the snow!"]
    code = (
        "import json, sys; sys.modules['open_clip'] = None\n"  # import open_clip fails
        "import contrastive_jax.data as d\n"
        f"assert d.__file__.startswith({str(site)!r}), d.__file__\n"
        f"print(json.dumps(d.make_tokenizer('clip_bpe').encode({texts!r}, 12).tolist()))"
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path, env=env
    )
    expected = data.ClipBPETokenizer().encode(texts, 12)
    np.testing.assert_array_equal(np.asarray(json.loads(out.stdout.strip().splitlines()[-1])), expected)
