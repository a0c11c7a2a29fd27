"""contrastive_jax: contrastive representation learning in JAX."""

from setuptools import find_packages, setup

CORE = [
    # The versions tested: jax 0.10.2 / flax 0.12.8 in CI (CPU); jax 0.11.2 / flax 0.12.12 by hand
    # (CPU, Python 3.12; flax 0.12.8 does not import with jax 0.11). Widen a bound only after the
    # test suite has passed on the new version.
    "jax>=0.10.2,<0.12",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.5",
    "chex>=0.1.90",
    "orbax-checkpoint>=0.11.0",
    "ml_collections>=1.0",
    "numpy>=1.26",
    "absl-py>=2.0",
]
DATA = [
    "tensorflow-datasets>=4.9.8",  # array_record builders and data_source; TensorFlow not needed
    "importlib_resources>=6.0",  # tfds resolves a packaged builder's code path with it
    "grain>=0.2.17",  # mp_prefetch batches into shared memory from 0.2.17
    "simplejpeg>=1.7",  # libjpeg-turbo without Pillow's overhead (the same pixels, ~2x faster)
    "pyarrow>=14",  # img2dataset's parquet output, read with grain's ParquetIterDataset
    "fsspec>=2023.1",  # shards at gs:// / s3:// / file:// URLs (gcsfs, s3fs: install them for those)
    "pillow>=10.0",
    "scikit-learn>=1.4",  # ships the handwritten digits used by digits_captions
    "tokenizers>=0.20",
    "sentencepiece>=0.2",
    "ftfy>=6.0",  # CLIP's BPE cleans text with it (ids differ without it)
]
TRAIN = ["tqdm>=4.60", "matplotlib>=3.8", "tensorboardX>=2.6"]
# Test references for the pretrained-model converters, tokenizers and the shard reader (see the
# Makefile: open_clip_torch itself is installed with --no-deps). torch 2.13.0 is the CPU build these machines install locally.
TORCH_REFS = ["torch==2.13.0", "transformers>=5.0,<6", "safetensors>=0.4", "ftfy>=6.0", "regex>=2023.0",
              "webdataset==1.0.2"]  # fmt: skip
DEV = ["pytest>=8.0", "pytest-xdist>=3.5", "ruff>=0.6", "nbmake>=1.5", "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.0"]

setup(
    name="contrastive_jax",
    version="0.1.0",
    description="Contrastive losses (CLIP, SigLIP, CoCa, iSogCLR, ...) and training in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["contrastive_jax", "contrastive_jax.*", "experiments", "experiments.*"]),
    package_data={"contrastive_jax": ["data/assets/*"], "experiments": ["suites/*.json"]},
    install_requires=CORE,
    extras_require={
        "data": DATA,
        "train": DATA + TRAIN,
        "dev": DATA + TRAIN + DEV,
        "torch-refs": TORCH_REFS,
    },
)
