"""Webdataset shards, parquet, the image path and the pipeline's workers, on shards the tests write
from real JPEG bytes (crops of scikit-learn's sample photographs)."""

import json
import os

import numpy as np
import pytest

from contrastive_jax import data
from contrastive_jax.train import ConfigError
from tests import shards_common as sc

GOOD = [i for i in range(48) if i not in (sc.CORRUPT, sc.CAPTIONLESS)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """48 photo records in 4 shards of 12 (one corrupt JPEG, one without caption, one PNG)."""
    out = tmp_path_factory.mktemp("shards")
    records = sc.photo_records(48)
    data.write_shards(records, str(out), samples_per_shard=12)
    return str(out / "{00000..00003}.tar"), records


def tokenizer():
    return data.make_tokenizer("clip_bpe")


def pipeline(source, **kw):
    args = dict(
        tokenizer=tokenizer(), batch_size=4, context_length=16, image_size=32, normalize=False, seed=1
    )
    return data.make_dataset(source, **(args | kw))


def indices(dataset, limit=None):
    out = []
    for batch in dataset:
        out.extend(batch["index"].tolist())
        if limit and len(out) >= limit:
            break
    return out


def test_brace_ranges_lists_and_joins():
    assert data.expand_urls("d/{008..011}.tar") == ["d/008.tar", "d/009.tar", "d/010.tar", "d/011.tar"]
    assert data.expand_urls("gs://b/{a,b}/{0..1}.tar::x.tar") == [
        "gs://b/a/0.tar", "gs://b/a/1.tar", "gs://b/b/0.tar", "gs://b/b/1.tar", "x.tar"]  # fmt: skip
    with pytest.raises(ConfigError, match="counts down"):
        data.expand_urls("{5..2}.tar")
    with pytest.raises(ConfigError, match="cannot expand"):
        data.expand_urls("{abc}.tar")


def test_records_are_what_was_written_and_what_webdataset_reads(shards):
    spec, records = shards
    source = data.WebDatasetSource(spec)
    assert len(source) == 48 and source.counts == [12, 12, 12, 12]
    for i in (0, sc.CAPTIONLESS, sc.AS_PNG, 47):
        record = source[i]
        assert record["image"] == records[i]["image"] and record["caption"] == records[i]["caption"]
        assert (
            record["json"]["uid"] == records[i]["uid"] and record["__key__"] == f"{i // 12:05d}{i % 12:04d}"
        )
    wds = pytest.importorskip("webdataset")  # the test reference (torch-refs extra)
    reference = list(wds.WebDataset(data.expand_urls(spec), shardshuffle=False))
    assert [s["__key__"] for s in reference] == [source[i]["__key__"] for i in range(48)]
    for i, sample in enumerate(reference):
        image = sample.get("jpg", sample.get("png"))
        caption = sample["txt"].decode() if "txt" in sample else None
        assert (image, caption) == (source[i]["image"], source[i]["caption"]), i


def test_counts_come_from_stats_and_the_index_is_built_once_and_cached(shards, tmp_path):
    spec, _ = shards
    for name in os.listdir(os.path.dirname(spec)):  # a fresh copy without cached indexes
        if not name.endswith("_index.json"):
            (tmp_path / name).write_bytes(open(os.path.join(os.path.dirname(spec), name), "rb").read())
    copy = str(tmp_path / "{00000..00003}.tar")
    stats = json.loads((tmp_path / "00001_stats.json").read_text())
    assert stats["successes"] == 12
    source = data.WebDatasetSource(copy)
    assert len(source) == 48 and not list(tmp_path.glob("*_index.json"))  # counted from the stats
    assert source[13]["caption"] == "photo 13 of a flower"
    index_file = tmp_path / "00001_index.json"
    assert index_file.exists() and json.loads(index_file.read_text())["count"] == 12
    cached = data.load_index(str(tmp_path / "00001.tar"))
    assert cached.keys[1] == "000010001"
    os.remove(tmp_path / "00002_stats.json")  # no stats: the shard is scanned and its index cached
    data.WebDatasetSource(copy)
    assert (tmp_path / "00002_index.json").exists()
    # A changed tar (another size) is indexed again rather than read with stale offsets.
    data.write_shards(sc.photo_records(5, seed=3), str(tmp_path / "other"), samples_per_shard=5)
    os.replace(tmp_path / "other" / "00000.tar", tmp_path / "00002.tar")
    assert len(data.load_index(str(tmp_path / "00002.tar"))) == 5


def test_shards_whose_folder_cannot_take_the_index_cache_it_elsewhere(shards, tmp_path):
    spec, _ = shards
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "00000.tar").write_bytes(open(os.path.join(os.path.dirname(spec), "00000.tar"), "rb").read())
    (folder / "00000_index.json").mkdir()  # the place beside the shard cannot be written as a file
    index = data.load_index(str(folder / "00000.tar"), str(tmp_path / "cache"))
    assert len(index) == 12 and len(list((tmp_path / "cache").glob("*_index.json"))) == 1
    assert len(data.load_index(str(folder / "00000.tar"), str(tmp_path / "cache"))) == 12  # read back


def test_missing_or_unreadable_shards_are_one_line_errors_up_front(shards, tmp_path):
    spec, _ = shards
    with pytest.raises(ConfigError, match=r"cannot read shard .*00004.tar.*and 1 more of the 2 shards"):
        data.WebDatasetSource(spec.replace("{00000..00003}", "{00004..00005}"))
    (tmp_path / "00000.tar").write_bytes(b"this is not a tar archive" * 40)
    with pytest.raises(ConfigError, match="cannot read shard .*not a readable tar"):
        data.WebDatasetSource(str(tmp_path / "00000.tar"))
    with pytest.raises(ConfigError, match="names no shard"):
        data.WebDatasetSource("::")


def test_bad_records_are_skipped_counted_and_the_rest_keep_their_order(shards):
    spec, _ = shards
    source = data.WebDatasetSource(spec)
    order = indices(pipeline(source, shuffle=False, num_epochs=1, drop_remainder=False))
    assert order == GOOD  # the corrupt JPEG and the captionless sample are gone, nothing else moved
    batches = list(pipeline(source, shuffle=False, num_epochs=1, drop_remainder=False))
    skipped = sum(b["skipped"].sum(axis=0) for b in batches)
    assert dict(zip(data.SKIP_KINDS, skipped.tolist())) == dict.fromkeys(data.SKIP_KINDS, 0) | {
        "corrupt_image": 1, "no_caption": 1}  # fmt: skip
    details = "".join(str(d) for b in batches for d in b["skip_detail"])
    assert "00000.tar 000000005" in details and "00000.tar 000000009" in details
    # An image over the pixel cap (read from its header) is skipped too: 256 x 256 photos and
    # small ones, under a cap of 100 x 100 pixels.
    mixed = [sc.photo_records(3)[i] | {"image": sc.jpeg(sc.photo(i, size))} for i, size in
             enumerate([(256, 256), (64, 64), (256, 256)])]  # fmt: skip
    data.write_shards(mixed, os.path.join(os.path.dirname(spec), "mixed"), samples_per_shard=3)
    capped = list(pipeline(data.WebDatasetSource(os.path.join(os.path.dirname(spec), "mixed", "00000.tar")),
                           shuffle=False, num_epochs=1, drop_remainder=False, max_pixels=100 * 100))  # fmt: skip
    assert [b["index"].tolist() for b in capped] == [[1]]
    assert capped[0]["skipped"].sum(axis=0)[data.SKIP_KINDS.index("too_large")] == 1  # the one before it
    # Shuffled: the good samples of one epoch, each once, in the order the shuffle gives them.
    shuffled = indices(pipeline(source, num_epochs=1, drop_remainder=False))
    assert sorted(shuffled) == GOOD and shuffled != GOOD


def test_processes_and_workers_see_each_sample_once_per_epoch(shards):
    spec, _ = shards
    source = data.WebDatasetSource(spec)
    per_process = [indices(pipeline(source, num_epochs=1, drop_remainder=False, process_index=p, process_count=2))
                   for p in range(2)]  # fmt: skip
    assert not set(per_process[0]) & set(per_process[1]) and sorted(sum(per_process, [])) == GOOD
    with_workers = indices(
        pipeline(source, num_epochs=1, drop_remainder=False, process_index=0, process_count=2, num_workers=2)
    )
    assert sorted(with_workers) == sorted(per_process[0])


def test_worker_state_restores_to_the_same_batches(shards):
    spec, _ = shards
    dataset = pipeline(data.WebDatasetSource(spec), augment="rrc", flip=True, num_workers=2)
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    state = json.loads(json.dumps(iterator.get_state()))
    expected = [next(iterator) for _ in range(4)]
    iterator.close()
    resumed = iter(dataset)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["index"], want["index"])
    resumed.close()


def test_resampled_readers_draw_their_own_shards_and_resume_exactly(shards):
    spec, _ = shards
    make = lambda reader, **kw: data.ResampledShards(
        spec, seed=4, process_index=reader, process_count=2, **kw
    )
    keys = [[next(it)["__key__"] for _ in range(40)] for it in (iter(make(0)), iter(make(1)))]
    shards_read = [{k[:5] for k in reader} for reader in keys]
    assert shards_read[0] <= {"00000", "00002"} and shards_read[1] <= {"00001", "00003"}
    assert all(len(set(r)) > 12 for r in keys)  # more than one shard drawn by each reader
    dataset = pipeline(make(0), augment="inception", shuffle_buffer=8)
    iterator = iter(dataset)
    next(iterator)
    state = json.loads(json.dumps(iterator.get_state()))
    expected = [next(iterator)["image"] for _ in range(3)]
    resumed = iter(dataset)
    resumed.set_state(state)
    for want in expected:
        np.testing.assert_array_equal(next(resumed)["image"], want)
    with pytest.raises(ConfigError, match=r"4 shards but 2 processes x 3 workers = 6 readers"):
        make(0, num_workers=3)


def test_parquet_rows_are_samples_and_resume(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    records = sc.photo_records(10)
    for part in range(2):  # img2dataset's parquet: key, jpg (null where the download failed), txt
        rows = records[part * 5 : part * 5 + 5]
        table = pa.table({"key": [f"{part:05d}{i:04d}" for i in range(5)],
                          "jpg": [None if part == 1 and i == 2 else r["image"] for i, r in enumerate(rows)],
                          "txt": [r["caption"] for r in rows], "width": [256] * 5})  # fmt: skip
        pq.write_table(table, tmp_path / f"{part:05d}.parquet")
    fields = ("width", "key")
    source = data.ParquetShards(
        str(tmp_path / "{00000..00001}.parquet"), seed=0, num_epochs=1, json_fields=fields
    )
    batches = list(pipeline(source, batch_size=2, drop_remainder=False, json_fields=fields))
    keys = sorted(k for b in batches for k in b["json/key"].tolist())
    # 10 rows less the null image (00001 0002), the corrupt JPEG (record 5) and the captionless one (9)
    assert keys == sorted(
        {f"{p:05d}{i:04d}" for p in range(2) for i in range(5)} - {"000010000", "000010002", "000010004"}
    )
    assert sum(b["skipped"].sum(axis=0) for b in batches)[data.SKIP_KINDS.index("no_image")] == 1
    assert all(b["json/width"].tolist() == [256] * len(b["tokens"]) for b in batches)
    endless = pipeline(data.ParquetShards(str(tmp_path / "*.parquet").replace("*", "{00000..00001}"), seed=0),
                       batch_size=2)  # fmt: skip
    iterator = iter(endless)
    for _ in range(4):  # into the second epoch
        next(iterator)
    state = json.loads(json.dumps(iterator.get_state()))
    expected = [next(iterator)["tokens"] for _ in range(3)]
    resumed = iter(endless)
    resumed.set_state(state)
    assert all(np.array_equal(next(resumed)["tokens"], want) for want in expected)


def test_shards_at_a_url_read_through_fsspec(shards):
    import fsspec

    spec, _ = shards
    memory = fsspec.filesystem("memory")
    for name in os.listdir(os.path.dirname(spec)):
        if name.endswith(".tar"):
            memory.pipe_file(f"/wds/{name}", open(os.path.join(os.path.dirname(spec), name), "rb").read())
    remote = data.WebDatasetSource("memory://wds/{00000..00003}.tar")
    local = data.WebDatasetSource(spec)
    assert len(remote) == 48 and all(remote[i]["image"] == local[i]["image"] for i in (0, 13, 47))
    assert memory.exists("/wds/00001_index.json")  # the index went beside the shard
    resampled = data.ResampledShards("memory://wds/{00000..00003}.tar", seed=0)
    assert next(iter(resampled))["image"] is not None


@pytest.mark.parametrize("augment, area, ratio", [("rrc", (0.9, 1.0), (3 / 4, 4 / 3)),
                                                  ("inception", (0.05, 1.0), (3 / 4, 4 / 3))])  # fmt: skip
def test_crops_stay_inside_the_image_within_their_area_and_aspect_bounds(augment, area, ratio):
    rng = np.random.default_rng(0)
    fallbacks = 0
    for seed in range(3000):
        width, height = int(rng.integers(20, 900)), int(rng.integers(20, 900))
        left, top, w, h = data.crop_box(augment, np.random.default_rng(seed), width, height)
        assert 0 <= left and 0 <= top and left + w <= width and top + h <= height and w > 0 and h > 0
        fraction, aspect = w * h / (width * height), w / h
        # Rounding to whole pixels moves the area and ratio by at most a pixel's share.
        slack_area = (w + h + 1) / (width * height)
        slack_ratio = aspect * (1 / w + 1 / h) + 1e-9
        inside = (
            area[0] - slack_area <= fraction <= area[1] + slack_area
            and ratio[0] - slack_ratio <= aspect <= ratio[1] + slack_ratio
        )
        if not inside:  # the documented fallback: the whole image (inception), the central crop (rrc)
            fallbacks += 1
            if augment == "inception":
                assert (left, top, w, h) == (0, 0, width, height)
            else:
                assert (
                    (w == width or h == height)
                    and abs(left - (width - w) // 2) <= 0
                    and top == (height - h) // 2
                )
    assert fallbacks < 3000 * (0.8 if augment == "rrc" else 0.05)  # odd shapes fall back (rrc: most)
    near_square = [data.crop_box(augment, np.random.default_rng(s), 500, 450) for s in range(500)]
    assert (
        sum(w * h / (500 * 450) >= area[0] - 0.01 for _, _, w, h in near_square) == 500
    )  # no fallback needed
    # Deterministic per seed, different across seeds.
    assert data.crop_box(augment, np.random.default_rng(7), 640, 480) == data.crop_box(
        augment, np.random.default_rng(7), 640, 480
    )
    assert len({data.crop_box(augment, np.random.default_rng(s), 640, 480) for s in range(20)}) > 15


def test_reduced_size_decoding_keeps_the_picture_and_equals_pillows_draft_decoding():
    import io

    from PIL import Image

    big = sc.photo(0, size=(1600, 1200))
    encoded = sc.jpeg(big, quality=92)
    full = np.asarray(Image.fromarray(big).resize((64, 64), Image.BILINEAR)).astype(np.float64)
    reduced = data.load_image(encoded, size=64, augment="none")  # 1600 x 1200 >= 8 x 64: decoded at 1/8
    assert np.abs(reduced.astype(np.float64) - full).mean() < 3.0  # grey levels: the same picture
    # Pillow's own reduced-size decoding (`draft`) of the same bytes, then the same resize: the
    # decoder the pipeline uses (libjpeg-turbo through simplejpeg) gives the same pixels.
    opened = Image.open(io.BytesIO(encoded))
    opened.draft("RGB", (200, 150))
    assert opened.size == (200, 150)
    expected = np.asarray(opened.convert("RGB").resize((64, 64), Image.BILINEAR, box=(0, 0, 200, 150)))
    np.testing.assert_array_equal(reduced, expected)
    rng = np.random.default_rng(3)
    left, top, w, h = data.crop_box("rrc", np.random.default_rng(3), 1600, 1200)
    assert min(w, h) >= 8 * 64  # the crop is still >= 64 pixels at 1/8
    opened = Image.open(io.BytesIO(encoded))
    opened.draft("RGB", (200, 150))
    box = (left / 8, top / 8, (left + w) / 8, (top + h) / 8)
    expected = np.asarray(opened.convert("RGB").resize((64, 64), Image.BICUBIC, box=box))
    np.testing.assert_array_equal(data.load_image(encoded, size=64, augment="rrc", rng=rng), expected)
    with pytest.raises(data.BadImage, match="too_large"):
        data.load_image(encoded, size=64, max_pixels=1600 * 1200 - 1)


def test_rrc_at_full_size_is_torchvisions_crop_then_bicubic_resize():
    from PIL import Image

    pixels = sc.photo(1, size=(300, 220))
    left, top, w, h = data.crop_box("rrc", np.random.default_rng(11), 300, 220)
    expected = np.asarray(
        Image.fromarray(pixels).crop((left, top, left + w, top + h)).resize((48, 48), Image.BICUBIC)
    )
    got = data.load_image(sc.png(pixels), size=48, augment="rrc", rng=np.random.default_rng(11))
    np.testing.assert_array_equal(got, expected)


def test_evaluation_takes_the_centre_square_as_before():
    from PIL import Image

    pixels = sc.photo(0, size=(90, 60))
    square = data.center_square(pixels)  # what zero-shot evaluation always cut
    expected = np.asarray(Image.fromarray(square).resize((32, 32), Image.BILINEAR))
    np.testing.assert_array_equal(data.load_image(pixels, size=32, augment="center"), expected)
    np.testing.assert_array_equal(data.load_image(sc.jpeg(pixels), size=32, augment="center"),
                                  data.load_image(np.asarray(Image.open(__import__("io").BytesIO(sc.jpeg(pixels)))), size=32, augment="center"))  # fmt: skip


def test_uint8_normalised_on_the_device_equals_the_float_host_path():
    import jax

    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    for mean, std in (
        (0.5, 0.5),
        ([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
    ):
        mean32, std32 = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        host = ((images.astype(np.float32) / 255.0) - mean32) / std32  # the pipeline's former host path
        device = jax.jit(lambda x: data.normalize_images(x, mean, std))(images)
        np.testing.assert_array_equal(np.asarray(device), host)
        np.testing.assert_array_equal(data.normalize_images(images, mean, std), host)


def test_device_prefetch_reports_the_state_of_the_last_batch_returned(shards):
    spec, _ = shards
    dataset = pipeline(data.WebDatasetSource(spec))
    reference = iter(dataset)
    states = []
    for _ in range(4):
        next(reference)
        states.append(reference.get_state())
    prefetch = data.DevicePrefetch(iter(dataset), lambda batch: batch, size=3)
    for k in range(4):
        device, host = next(prefetch)
        assert prefetch.get_state() == states[k] and "skipped" in host and "skipped" not in device
    prefetch.close()

    class Broken:
        def get_state(self):
            return {}

        def __next__(self):
            raise OSError("disk gone")

    failing = data.DevicePrefetch(Broken(), lambda batch: batch)
    with pytest.raises(OSError, match="disk gone"):
        next(failing)
    failing.close()
