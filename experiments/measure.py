"""Measurements of a finished run beyond its own evaluation, for the results table.

Part of each results row's code version (experiments/results.py hashes this file with the
library and the configs): changing a measurement here reruns the rows that use it.
"""

from __future__ import annotations

import numpy as np


def rare_pair_accuracy(workdir: str) -> dict[str, float]:
    """Zero-shot colour/shape accuracy on the test images whose (colour, shape) pair is rare in
    training: at most the median of the run's training-pair frequencies."""
    from contrastive_jax import data, evaluate, train

    config, model, _, tokenizer = train.load_run(workdir)
    model = evaluate.Encoders(model)
    emb = evaluate.embed_split(model, config, tokenizer, "test")
    freq = data.pair_frequencies(config.data.builder_config)
    rare = freq[emb["color"], emb["shape"]] <= np.median(freq)
    out = {}
    for question in ("color", "shape"):
        out[f"rare_pairs/{question}"] = evaluate.zero_shot(
            model, tokenizer, config.data.name, question, config.data.context_length, emb["image_emb"][rare],
            emb[question][rare],
        )  # fmt: skip
    return out


def temperature_vs_frequency(workdir: str) -> dict:
    """How iSogCLR's learned per-sample temperatures relate to how frequent each sample's
    semantics (its (colour, shape) pair) are in the training split.

    Returns Spearman's rank correlation between τ_i and the frequency of sample i's pair, over the
    samples the run visited, for the image-side and text-side temperatures
    (`tau_image_vs_frequency`, `tau_text_vs_frequency`; NaN when every pair is equally frequent),
    and per pair (`pair_frequency`, `pair_tau_image`, `pair_tau_text`: lists in the order
    colour × shape) the pair's frequency and its samples' mean τ, for the scatter plot.
    """
    from scipy import stats

    from contrastive_jax import data, train

    config = train.read_run_config(workdir).to_dict()
    _, state = train.load_loss_state(workdir)
    source = data.load_source(config["data"]["name"], "train", config=config["data"]["builder_config"])
    n = len(source)
    color = np.array([source[i]["color"] for i in range(n)])
    shape = np.array([source[i]["shape"] for i in range(n)])
    freq_table = data.pair_frequencies(config["data"]["builder_config"])
    freq = freq_table[color, shape]
    seen = state["seen"][:n].astype(bool)
    out: dict = {"pair_frequency": freq_table.ravel().tolist()}
    for side in ("image", "text"):
        tau = state[f"tau_{side}"][:n]
        constant = np.ptp(freq[seen]) == 0 or np.ptp(tau[seen]) == 0
        rho = np.nan if constant else stats.spearmanr(tau[seen], freq[seen]).statistic
        out[f"tau_{side}_vs_frequency"] = float(rho)
        pair = color * len(data.SHAPES) + shape
        means = [float(tau[seen & (pair == k)].mean()) if np.any(seen & (pair == k)) else float("nan")
                 for k in range(freq_table.size)]  # fmt: skip
        out[f"pair_tau_{side}"] = means
    return out
