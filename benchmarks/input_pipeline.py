"""Images per second of the whole input pipeline on webdataset shards, beside two references.

    python benchmarks/input_pipeline.py --out benchmarks/results/input_pipeline_cpu.json \
        --md benchmarks/results/input_pipeline_cpu.md
    python benchmarks/input_pipeline.py --smoke     # a few batches, any machine

What is timed, per row: shards are read, JPEGs decoded, a RandomResizedCrop(scale 0.9-1.0) taken
and resized to 224 x 224 (bicubic), captions tokenized with CLIP's BPE (context 77) and samples
batched (64), for `--images` images after two warm-up batches (median of `--repeats` passes).
The same shards, in two image sizes: 256 x 256 (img2dataset's default `--image_size 256`) and
500 x 375, JPEG quality 95 (img2dataset's default), crops of scikit-learn's two sample
photographs; captions are 8-20 words.

Rows:
* `contrastive_jax`: `data.make_dataset(WebDatasetSource(...), augment="rrc", normalize=False)`
  with 0 (threads in this process), 1 and 2 worker processes; images stay uint8.
* `pil_loop`: one process, no framework: tar members read in order, Pillow decode (reduced-size
  decoding via `draft` where the crop is >= 2x the target, as the pipeline does), the same
  crop and resize, the same tokenizer, stacked into a batch. The per-core reference.
* `open_clip_path`: open_clip's training input (`open_clip/training/data.py::get_wds_dataset`):
  the `webdataset` package (tar expansion, shuffle buffer, decode "pilrgb", rename, map,
  batched) and torch's DataLoader with the same worker count; its transform is torchvision's
  `RandomResizedCrop(224, scale=(0.9, 1.0), interpolation=BICUBIC)`, `ToTensor`, `Normalize`,
  reimplemented here with Pillow and torch because PyPI's torchvision cannot load beside the CPU
  torch on these machines (the crop, resize and float conversion are the same operations), and
  open_clip's own tokenizer (`open_clip/tokenizer.py`, loaded by path). Batches are float32.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

SIZES = {"256px": (256, 256), "500x375": (500, 375)}
WORDS = ("a photo of the old temple roof with red tiles under a clear blue sky seen from the garden "
         "close up of a yellow flower with green leaves and soft light in the morning near water").split()  # fmt: skip


def make_shards(folder: str, size, count: int, per_shard: int = 256) -> str:
    """`count` JPEGs of `size` (crops of the two sample photographs) with captions, as shards."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from contrastive_jax import data

    photos = load_sample_images().images
    rng = np.random.default_rng(0)

    def records():
        for i in range(count):
            photo = photos[i % 2]
            h, w = photo.shape[:2]
            aspect = size[0] / size[1]
            ch = int(rng.integers(int(0.6 * h), h + 1))
            cw = min(w, int(ch * aspect))
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            image = Image.fromarray(photo[top : top + ch, left : left + cw]).resize(size, Image.BICUBIC)
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=95)
            caption = " ".join(rng.choice(WORDS, int(rng.integers(8, 21))))
            yield {"image": buffer.getvalue(), "caption": caption}

    paths = data.write_shards(records(), folder, samples_per_shard=per_shard)
    return os.path.join(folder, f"{{00000..{len(paths) - 1:05d}}}.tar")


def _rate(batches, images: int, batch_size: int, warmup: int = 2) -> float:
    iterator = iter(batches)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(math.ceil(images / batch_size)):
        next(iterator)
    elapsed = time.perf_counter() - start
    close = getattr(iterator, "close", None)
    if close is not None:
        close()
    return math.ceil(images / batch_size) * batch_size / elapsed


def ours(urls: str, workers: int, images: int, batch: int) -> float:
    from contrastive_jax import data

    dataset = data.make_dataset(
        data.WebDatasetSource(urls), tokenizer=data.make_tokenizer("clip_bpe"), batch_size=batch,
        context_length=77, image_size=224, augment="rrc", normalize=False, num_workers=workers, seed=0,
    )  # fmt: skip
    return _rate(dataset, images, batch)


def pil_loop(urls: str, images: int, batch: int) -> float:
    """The per-core reference: sequential tar reads, Pillow, the same crop, resize and tokenizer."""
    import tarfile

    from PIL import Image

    from contrastive_jax import data

    tokenizer = data.make_tokenizer("clip_bpe")

    def samples():
        while True:
            for url in data.expand_urls(urls):
                with tarfile.open(url) as tar:
                    members = {}
                    for member in tar:
                        key, ext = member.name.rsplit(".", 1)
                        members.setdefault(key, {})[ext] = tar.extractfile(member).read()
                        if len(members[key]) == 3:
                            yield members.pop(key)

    def batches():
        rng = np.random.default_rng(0)
        stream = samples()
        while True:
            pixels, tokens = [], []
            for _ in range(batch):
                sample = next(stream)
                image = Image.open(io.BytesIO(sample["jpg"]))
                width, height = image.size
                left, top, w, h = data.crop_box("rrc", rng, width, height)
                scale = 1
                while scale < 8 and min(w, h) >= 2 * scale * 224:
                    scale *= 2
                if scale > 1:  # reduced-size decoding, as the pipeline does
                    image.draft("RGB", (-(-width // scale), -(-height // scale)))
                image = image.convert("RGB")
                if image.size != (width, height):
                    sx, sy = image.size[0] / width, image.size[1] / height
                    box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
                    image = image.resize((224, 224), Image.BICUBIC, box=box)
                else:
                    image = image.crop((left, top, left + w, top + h)).resize((224, 224), Image.BICUBIC)
                pixels.append(np.asarray(image))
                tokens.append(tokenizer.encode([sample["txt"].decode()], 77)[0])
            yield {"image": np.stack(pixels), "tokens": np.stack(tokens)}

    return _rate(batches(), images, batch)


def _open_clip_tokenize():
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "tokenizer.py")
    module_spec = importlib.util.spec_from_file_location("_oc_tokenizer", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.tokenize


class _OpenClipTransform:
    """torchvision's RandomResizedCrop(224, (0.9, 1), BICUBIC) + ToTensor + Normalize, on Pillow."""

    MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's OPENAI_DATASET_MEAN / STD
    STD = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self):
        self._rng = None

    def __call__(self, image):
        import torch
        from PIL import Image

        from contrastive_jax import data

        if self._rng is None:
            self._rng = np.random.default_rng(os.getpid())
        left, top, w, h = data.crop_box("rrc", self._rng, *image.size)
        image = image.crop((left, top, left + w, top + h)).resize((224, 224), Image.BICUBIC).convert("RGB")
        tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255)
        mean = torch.tensor(self.MEAN).view(3, 1, 1)
        std = torch.tensor(self.STD).view(3, 1, 1)
        return (tensor - mean) / std


def open_clip_path(urls: str, workers: int, images: int, batch: int) -> float | None:
    try:
        import torch
        import webdataset as wds
    except ImportError:
        return None
    tokenize = _open_clip_tokenize()
    if tokenize is None:
        return None
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(data_urls(urls)),
        wds.split_by_worker,
        wds.tarfile_to_samples(),
        wds.shuffle(1000),
        wds.select(lambda s: ("txt" in s) and any(k in s for k in ("png", "jpg", "jpeg", "webp"))),
        wds.decode("pilrgb"),
        wds.rename(image="jpg;png;jpeg;webp", text="txt"),
        wds.map_dict(image=_OpenClipTransform(), text=lambda text: tokenize([text])[0]),
        wds.to_tuple("image", "text"),
        wds.batched(batch, partial=False),
    ).repeat(1000)
    loader = wds.WebLoader(pipeline, batch_size=None, shuffle=False, num_workers=workers,
                           persistent_workers=workers > 0)  # fmt: skip
    torch.set_num_threads(1)
    return _rate(loader, images, batch)


def data_urls(urls: str) -> list[str]:
    from contrastive_jax import data

    return data.expand_urls(urls)


def run_row(impl: str, workers: int, urls: str, images: int, batch: int, repeats: int) -> dict:
    """One row, in this process, on `max(workers, 1)` cores (the process and its workers)."""
    cores = min(max(workers, 1), os.cpu_count() or 1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(cores)))  # worker processes inherit it
    job = {
        "contrastive_jax": lambda: ours(urls, workers, images, batch),
        "pil_loop": lambda: pil_loop(urls, images, batch),
        "open_clip_path": lambda: open_clip_path(urls, workers, images, batch),
    }[impl]
    rates = [job() for _ in range(repeats)]
    return {"cores": cores, "passes": rates}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1536, help="images timed per pass")
    parser.add_argument("--shard-images", type=int, default=2048, help="images written per size")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--dir", default=None, help="where the shards are written (default: a temp dir)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--md", default=None)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--row", nargs=3, metavar=("IMPL", "WORKERS", "URLS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        impl, workers, urls = args.row
        print("ROW " + json.dumps(run_row(impl, int(workers), urls, args.images, args.batch, args.repeats)))
        return
    if args.smoke:
        args.images, args.shard_images, args.repeats, args.workers = 128, 256, 1, [0, 1]
    folder = args.dir or tempfile.mkdtemp(prefix="input_pipeline_")
    rows = []
    for name in args.sizes:
        target = os.path.join(folder, name)
        if os.path.isfile(os.path.join(target, "00000.tar")):
            urls = os.path.join(
                target, f"{{00000..{len([f for f in os.listdir(target) if f.endswith('.tar')]) - 1:05d}}}.tar"
            )
        else:
            urls = make_shards(target, SIZES[name], args.shard_images)
        jobs = [("pil_loop", 0)] + [(impl, w) for w in args.workers
                                    for impl in ("contrastive_jax", "open_clip_path") if impl != "open_clip_path" or w > 0]  # fmt: skip
        for impl, workers in jobs:
            command = [sys.executable, os.path.abspath(__file__), "--row", impl, str(workers), urls,
                       "--images", str(args.images), "--batch", str(args.batch), "--repeats", str(args.repeats)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True)
            found = [line for line in done.stdout.splitlines() if line.startswith("ROW ")]
            if done.returncode or not found:
                print(f"{name} {impl} workers={workers}: failed\n{done.stderr[-2000:]}", flush=True)
                continue
            result = json.loads(found[-1][4:])
            if result["passes"][0] is None:
                print(f"{name} {impl}: skipped (webdataset, torch or open_clip not installed)", flush=True)
                continue
            rate = statistics.median(result["passes"])
            row = {"images": name, "impl": impl, "workers": workers, "cores": result["cores"], "images_per_s": rate,
                   "images_per_s_per_core": rate / result["cores"], "passes": result["passes"]}  # fmt: skip
            rows.append(row)
            print(f"{name:8s} {impl:16s} workers={workers} cores={row['cores']}: {rate:7.0f} images/s "
                  f"({row['images_per_s_per_core']:5.0f} per core)", flush=True)  # fmt: skip
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "batch": args.batch, "images_timed": args.images, "augment": "rrc 224 bicubic", "tokenizer": "clip_bpe, 77",
            "repeats": args.repeats}  # fmt: skip
    table = render(rows, meta)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    if args.md:
        with open(args.md, "w") as f:
            f.write(table + "\n")


def render(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Input pipeline on {meta['cpus']} CPU cores ({meta['machine']}), batch {meta['batch']}, "
        f"{meta['augment']}, {meta['tokenizer']}; images/s over {meta['images_timed']} images, median of passes.",  # fmt: skip
        "Each row runs in its own process pinned to its cores (worker processes included).",
        "",
        "| images | pipeline | workers | cores | images/s | per core |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['images']} | {r['impl']} | {r['workers']} | {r['cores']} | {r['images_per_s']:,.0f} "
                     f"| {r['images_per_s_per_core']:,.0f} |")  # fmt: skip
    by = {(r["images"], r["impl"], r["workers"]): r["images_per_s"] for r in rows}
    lines.append("")
    for size in dict.fromkeys(r["images"] for r in rows):
        one, two = by.get((size, "contrastive_jax", 1)), by.get((size, "contrastive_jax", 2))
        ref = by.get((size, "open_clip_path", 1))
        ref_two = by.get((size, "open_clip_path", 2))
        parts = []
        if one and two:
            parts.append(f"1 -> 2 workers: {two / one:.2f}x")
        per_core = by.get((size, "contrastive_jax", 2))
        if per_core:
            parts.append(f"per core at 2 workers: {per_core / 2:,.0f} images/s")
        if one and ref:
            parts.append(f"vs open_clip's path at 1 worker: {one / ref:.2f}x")
        if two and ref_two:
            parts.append(f"at 2 workers: {two / ref_two:.2f}x")
        if one and by.get((size, "pil_loop", 0)):
            parts.append(f"vs the one-process PIL loop: {one / by[(size, 'pil_loop', 0)]:.2f}x")
        lines.append(f"- {size}: " + "; ".join(parts))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
