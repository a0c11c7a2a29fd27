"""The objective registry: each record's adapter, the checks that read it, the README table.

`python -m tests.test_objectives` rewrites the README's objective table from the registry.
"""

import importlib
import pathlib
import re

import numpy as np
import pytest

from contrastive_jax import losses
from contrastive_jax import train as training

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
TABLE = re.compile(r"(<!-- OBJECTIVES -->\n)(.*?)(<!-- END OBJECTIVES -->)", re.S)
BATCH, DIM, NUM_SAMPLES = 6, 4, 10


def fake_inputs():
    """Every model output any objective reads, and a batch with dataset ids."""
    rng = np.random.default_rng(0)

    def unit(*shape):
        v = rng.normal(size=shape).astype(np.float32)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    outputs = {
        "image_emb": unit(BATCH, DIM),
        "text_emb": unit(BATCH, DIM),
        "cf_text_emb": unit(BATCH, DIM),
        "logit_scale": np.float32(5.0),
        "logit_bias": np.float32(-2.0),
        "caption_logits": rng.normal(size=(BATCH, 3, 7)).astype(np.float32),
        "caption_labels": rng.integers(0, 7, size=(BATCH, 3)).astype(np.int32),
        # CL2L / BarLIP: two views per sample, by sample as the model returns them
        "image_local": unit(BATCH, 2, DIM),
        "text_local": unit(BATCH, 2, DIM),
        "local_logit_scale": np.float32(8.0),
        "v_image": rng.normal(size=(BATCH, 5)).astype(np.float32),
        "v_text": rng.normal(size=(BATCH, 5)).astype(np.float32),
        "v_image_local": rng.normal(size=(BATCH, 2, 5)).astype(np.float32),
        "v_text_local": rng.normal(size=(BATCH, 2, 5)).astype(np.float32),
    }
    return outputs, {"index": np.array([3, 1, 4, 0, 9, 2], np.int32)}


def _temperature_state():
    return losses.isogclr_init(NUM_SAMPLES, tau_init=0.02, tau_min=0.005, tau_max=0.05)


# Per objective: settings that differ from its defaults (so the test sees the adapter read them)
# and the direct call of the loss with those settings, `(outputs, batch, state) -> (loss, new_state)`
# (`state` is None on the first call, when the direct call makes its own initial state).
DIRECT = {
    "clip": (
        dict(label_smoothing=0.1),
        lambda o, b, s: (
            losses.clip_loss(o["image_emb"], o["text_emb"], o["logit_scale"], label_smoothing=0.1),
            {},
        ),
    ),
    "siglip": (
        dict(block_size=2),
        lambda o, b, s: (
            losses.siglip_loss(o["image_emb"], o["text_emb"], o["logit_scale"], o["logit_bias"]),
            {},
        ),
    ),
    "coca": (
        dict(caption_weight=3.0, contrastive_weight=0.5),
        lambda o, b, s: (
            losses.coca_loss(
                *(o[k] for k in ("image_emb", "text_emb", "logit_scale", "caption_logits", "caption_labels")),
                caption_weight=3.0,
                contrastive_weight=0.5,
            )[0],
            {},
        ),
    ),
    "isogclr": (
        dict(tau_init=0.02, gamma=0.5, rho=5.0, eta=0.001, beta=0.8),
        lambda o, b, s: losses.isogclr_loss(
            o["image_emb"],
            o["text_emb"],
            b["index"],
            s or _temperature_state(),
            gamma=0.5,
            rho=5.0,
            eta=0.001,
            beta=0.8,
        ),
    ),
    "sogclr": (
        dict(tau_init=0.02, gamma=0.5),
        lambda o, b, s: losses.isogclr_loss(
            o["image_emb"],
            o["text_emb"],
            b["index"],
            s or _temperature_state(),
            gamma=0.5,
            learn_temperature=False,
        ),
    ),
    "clip_count": (
        dict(count_weight=0.5),
        lambda o, b, s: (
            losses.clip_loss(o["image_emb"], o["text_emb"], o["logit_scale"])
            + 0.5 * losses.counting_loss(o["image_emb"], o["text_emb"], o["cf_text_emb"]),
            {},
        ),
    ),
    "nt_xent": (
        dict(temperature=0.2),
        lambda o, b, s: (losses.nt_xent_loss(o["image_emb"], o["text_emb"], temperature=0.2), {}),
    ),
    "dcl": (
        dict(temperature=0.2),
        lambda o, b, s: (losses.dcl_loss(o["image_emb"], o["text_emb"], temperature=0.2), {}),
    ),
    "hcl": (
        dict(temperature=0.3, tau_plus=0.05, beta=0.5),
        lambda o, b, s: (
            losses.hcl_loss(o["image_emb"], o["text_emb"], temperature=0.3, tau_plus=0.05, beta=0.5),
            {},
        ),
    ),
    "hard_topk_infonce": (  # the trainer's default takes both directions: their mean
        dict(temperature=0.2, num_hard=3),
        lambda o, b, s: (
            (
                losses.hard_topk_infonce_loss(o["image_emb"], o["text_emb"], temperature=0.2, num_hard=3)
                + losses.hard_topk_infonce_loss(o["text_emb"], o["image_emb"], temperature=0.2, num_hard=3)
            )
            / 2,
            {},
        ),
    ),
    "cl2l": (
        dict(label_smoothing=0.2, reduction="sum"),
        lambda o, b, s: (
            losses.cl2l_loss(
                *(o[k] for k in ("image_emb", "text_emb")),
                *(o[k].transpose(1, 0, 2) for k in ("image_local", "text_local")),
                *(o[k] for k in ("logit_scale", "local_logit_scale")),
                label_smoothing=0.2,
                reduction="sum",
            ),
            {},
        ),
    ),
    "barlip": (
        dict(label_smoothing=0.0, lambda_offdiag=0.01, scale=0.5, barlip_weight=2.0),
        lambda o, b, s: (
            losses.cl2l_loss(
                *(o[k] for k in ("image_emb", "text_emb")),
                *(o[k].transpose(1, 0, 2) for k in ("image_local", "text_local")),
                *(o[k] for k in ("logit_scale", "local_logit_scale")),
                label_smoothing=0.0,
            )
            + 2.0
            * losses.barlip_loss(
                o["v_image"],
                o["v_text"],
                v_image_local=o["v_image_local"].transpose(1, 0, 2),
                v_text_local=o["v_text_local"].transpose(1, 0, 2),
                lambda_offdiag=0.01,
                scale=0.5,
            ),
            {},
        ),
    ),
    "comp_sum_clip": (
        dict(tau=0.5),
        lambda o, b, s: (
            losses.comp_sum_clip_loss(o["image_emb"], o["text_emb"], o["logit_scale"], tau=0.5),
            {},
        ),
    ),
}
GATHER_ONLY = {
    "nt_xent",
    "dcl",
    "hcl",
    "hard_topk_infonce",
}  # their losses gather candidates and have no ring
# What the shipped configs set in their loss section beyond the registry's defaults.
CONFIG_SETTINGS = {"hard_topk_infonce": dict(temperature=0.07, num_hard=8), "comp_sum_clip": dict(tau=1.5)}


def config_for(name):
    """The shipped config of objective `name` (every objective has one in experiments/configs)."""
    return importlib.import_module(f"experiments.configs.{name}").get_config("shapes_count")


def with_loss(config, **values):
    with config.unlocked():
        config.loss.update(values)
    return config


def test_every_objective_has_a_direct_reference_here():
    assert set(DIRECT) == set(training.OBJECTIVES)


@pytest.mark.parametrize("name", sorted(DIRECT))
def test_adapter_gives_the_loss_functions_value(name):
    settings, direct = DIRECT[name]
    config = training.loss_config(name, **settings)
    outputs, batch = fake_inputs()
    state = training.init_loss_state(config, NUM_SAMPLES)
    want_state = None
    for step in range(2):  # the second step, on other pairs, reads the state the first one wrote
        if step:
            outputs["image_emb"] = np.roll(outputs["image_emb"], 1, axis=0)
        loss, metrics, state = training.compute_loss(config, outputs, batch, state)
        want, want_state = direct(outputs, batch, want_state)
        np.testing.assert_allclose(loss, want, rtol=1e-5)
        assert metrics["loss"] is loss and metrics["logit_scale"] == outputs["logit_scale"]
        if want_state:  # the per-sample temperatures move as the loss moves them
            np.testing.assert_allclose(state.tau_image, want_state.tau_image, rtol=1e-6)


def test_step_encodes_the_inputs_a_record_names():
    class TextTower:
        def encode_text(self, tokens):
            return tokens * 10

    batch = {"tokens": np.ones((2, 3)), "cf_tokens": np.arange(6).reshape(2, 3)}
    added = training.get_objective("clip_count").encode_inputs(TextTower(), batch)
    assert set(added) == {"cf_text_emb"}
    np.testing.assert_array_equal(added["cf_text_emb"], batch["cf_tokens"] * 10)
    assert training.get_objective("clip").encode_inputs(TextTower(), batch) == {}
    outputs, _ = fake_inputs()
    del outputs["cf_text_emb"]
    with pytest.raises(ValueError, match=r"clip_count.*cf_text_emb.*cf_tokens"):
        training.compute_loss(training.loss_config("clip_count"), outputs, {}, {})


@pytest.mark.parametrize("name", sorted(DIRECT))
def test_ring_is_refused_exactly_where_the_loss_has_none(data_dir, name):
    config = with_loss(config_for(name), exchange="ring")
    if name not in GATHER_ONLY:
        training.validate_config(config, 8)
        return
    with pytest.raises(training.ConfigError) as info:
        training.validate_config(config, 8)
    assert f"loss {name!r} has no ring exchange" in str(info.value)
    assert "--config.loss.exchange=all_gather" in str(info.value)


@pytest.mark.parametrize(
    "name, model", [("siglip", "siglip"), ("coca", "coca"), ("cl2l", "cl2l"), ("barlip", "barlip")]
)
def test_a_loss_needing_another_model_is_refused(data_dir, name, model):
    config = with_loss(config_for("clip"), name=name)  # the clip model has neither output
    with pytest.raises(training.ConfigError) as info:
        training.validate_config(config, 8)
    assert f"needs the {model!r} model" in str(info.value) and f"configs/{model}.py" in str(info.value)


def test_unknown_objective_suggests_close_names(data_dir):
    with pytest.raises(training.ConfigError, match="did you mean 'isogclr' or 'sogclr'"):
        training.validate_config(with_loss(config_for("clip"), name="isogclrr"), 8)
    with pytest.raises(training.ConfigError, match="did you mean 'dcl'"):
        training.compute_loss({"name": "dlc"}, *fake_inputs(), {})


def test_a_records_checks_run_in_validation(data_dir):
    unset = with_loss(config_for("hard_topk_infonce"), num_hard=None)
    with pytest.raises(training.ConfigError, match=r"loss\.num_hard is None but must be a positive integer"):
        training.validate_config(unset, 8)
    with pytest.raises(training.ConfigError, match=r"loss\.temperature is 0\.0 but must be a positive"):
        training.validate_config(with_loss(config_for("nt_xent"), temperature=0.0), 8)
    with pytest.raises(training.ConfigError, match="fixed_temperature"):
        training.validate_config(with_loss(config_for("clip"), fixed_temperature=-1.0), 8)


def test_configs_take_their_loss_section_from_the_registry():
    for name in training.OBJECTIVES:
        want = training.loss_config(name, **CONFIG_SETTINGS.get(name, {}))
        assert config_for(name).loss.to_dict() == want.to_dict(), name
    assert "temperature" not in training.loss_config("clip")  # each section holds its own keys only
    assert training.loss_config("isogclr").shard_state is False and "shard_state" not in training.loss_config(
        "clip"
    )
    with pytest.raises(ValueError, match="did you mean 'temperature'"):
        training.loss_config("nt_xent", temprature=0.2)


def test_readme_objective_table_is_the_registrys():
    found = TABLE.search(README.read_text())
    assert found, "README.md has no <!-- OBJECTIVES --> ... <!-- END OBJECTIVES --> block"
    assert found.group(2) == training.objective_table(), "stale: run python -m tests.test_objectives"


if __name__ == "__main__":  # rewrite the README's table from the registry
    text = README.read_text()
    README.write_text(TABLE.sub(lambda m: m.group(1) + training.objective_table() + m.group(3), text))
