"""`make demo`: train a tiny CLIP on the embedded shapes_count data on a CPU and report what it learned.

Generates the dataset on first use (no network), trains for the default config's steps, then
prints zero-shot accuracy on the test split's colour, shape and count questions, image↔text
recall, counting accuracy (true caption vs. the same caption with a wrong count) and where the
plots are. `python -m experiments.demo --steps N --workdir DIR` to change the defaults.

`--shards DIR` trains the same model from webdataset shards instead: shapes_count's train and test
splits written once as img2dataset-layout tars under DIR (`data.write_shards`, as
`experiments.make_shards` does), read with two worker processes, tokenized with CLIP's BPE (the
word vocabulary belongs to the embedded dataset's name), evaluated zero-shot with its prompts.
"""

import argparse
import os
import shutil
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default="workdirs/demo")
    parser.add_argument("--steps", type=int, default=None, help="override the config's total_steps")
    parser.add_argument("--resume", action="store_true", help="continue the run in --workdir")
    parser.add_argument("--shards", default=None, help="train from webdataset shards written to this folder")
    parser.add_argument("--builder_config", default="default", help="shapes_count config (tiny: 256 images)")
    args = parser.parse_args()

    from contrastive_jax.train import train
    from experiments._cli import show_library_logs
    from experiments.configs.clip import get_config

    show_library_logs()  # "Resumed from step ...", the model summary, as the training CLI shows them

    config = get_config("shapes_count")
    config.data.builder_config = args.builder_config
    if args.shards:
        config.data.update(_shards(args.shards, args.builder_config))
    if args.steps:
        config.total_steps = args.steps
    if os.path.isdir(args.workdir) and not args.resume:
        shutil.rmtree(args.workdir)
    started = time.time()
    results = train(config, args.workdir)
    minutes = (time.time() - started) / 60

    print(
        f"\nTrained {config.loss.name} on {config.data.name} for {config.total_steps} steps "
        f"(batch {config.batch_size}) in {minutes:.1f} min."
    )
    print("Zero-shot accuracy on the test split (chance: colour 17%, shape 33%, count 10%):")
    for key, value in results.items():
        if key.startswith("zero_shot/"):
            print(f"  {key.removeprefix('zero_shot/'):>8s}: {100 * value:5.1f}%")
    for key in ("image_to_text_r@1", "text_to_image_r@1", "counting_accuracy"):
        if key in results:
            print(f"  {key:>18s}: {100 * results[key]:5.1f}%")
    best = max(results.get("zero_shot/color", 0.0), results.get("zero_shot/shape", 0.0))
    print(
        f"Colour-or-shape zero-shot target (>= 60%): {'met' if best >= 0.6 else 'NOT met'} ({100 * best:.1f}%)"
    )
    for name, path in results.get("plots", {}).items():
        print(f"  {name} plot: {path}")
    print(f"Metrics: {os.path.join(args.workdir, 'metrics.jsonl')} (TensorBoard: {args.workdir}/tensorboard)")


def _shards(folder: str, builder_config: str) -> dict:
    """Data config entries for shapes_count's splits as shards in `folder` (written if missing)."""
    from contrastive_jax import data

    urls = {}
    for split in ("train", "test"):
        out = os.path.join(folder, split)
        if not os.path.isfile(os.path.join(out, "00000_stats.json")):
            source = data.load_source("shapes_count", split, config=builder_config)
            data.write_shards((dict(source[i]) for i in range(len(source))), out, samples_per_shard=1000)
        count = len([f for f in os.listdir(out) if f.endswith(".tar")])
        urls[split] = os.path.join(out, f"{{00000..{count - 1:05d}}}.tar")
    return dict(
        name="webdataset", urls=urls["train"], eval_urls=urls["test"], tokenizer="clip_bpe", num_workers=2
    )


if __name__ == "__main__":
    main()
