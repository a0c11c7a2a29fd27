"""Prints every loss in contrastive_jax.losses on a tiny random batch (and its gradient norm).

`python -m experiments.losses_demo`. A quick smoke check of an installation; `make demo`
runs the training job instead.
"""

import jax
import jax.numpy as jnp

import contrastive_jax as cj
from contrastive_jax import losses


def main() -> None:
    key_img, key_txt, key_cap = jax.random.split(jax.random.key(0), 3)
    images = cj.l2_normalize(jax.random.normal(key_img, (8, 16)))
    texts = cj.l2_normalize(images + 0.5 * jax.random.normal(key_txt, (8, 16)))
    scale = cj.logit_scale_from_param(jnp.log(1 / 0.07))
    caption_logits = jax.random.normal(key_cap, (8, 6, 20))
    caption_labels = jnp.tile(jnp.arange(1, 7), (8, 1)).at[:, -1].set(0)
    state = losses.isogclr_init(100)

    rows = {
        "clip_loss": lambda x, y: losses.clip_loss(x, y, scale),
        "clip_loss (block_size=4)": lambda x, y: losses.clip_loss(x, y, scale, block_size=4),
        "siglip_loss": lambda x, y: losses.siglip_loss(x, y, 10.0, -10.0),
        "coca_loss": lambda x, y: losses.coca_loss(x, y, scale, caption_logits, caption_labels)[0],
        "grouped_clip_loss (2 groups)": lambda x, y: losses.grouped_clip_loss(x, y, scale, num_groups=2),
        "isogclr_loss": lambda x, y: losses.isogclr_loss(x, y, jnp.arange(8), state)[0],
        "nt_xent_loss": lambda x, y: losses.nt_xent_loss(x, y),
        "supcon_loss": lambda x, y: losses.supcon_loss(jnp.stack([x, y], 1), jnp.arange(8) % 3),
        "dcl_loss / dclw_loss": lambda x, y: losses.dcl_loss(x, y) + losses.dclw_loss(x, y),
        "dhel_loss": lambda x, y: losses.dhel_loss(x, y),
        "mv_infonce_loss (3 views)": lambda x, y: losses.mv_infonce_loss(jnp.stack([x, y, (x + y) / 2])),
        "mv_dhel_loss (3 views)": lambda x, y: losses.mv_dhel_loss(jnp.stack([x, y, (x + y) / 2])),
        "counting_loss": lambda x, y: losses.counting_loss(x, y, jnp.roll(y, 1, axis=0)),
        "cwcl_loss": lambda x, y: losses.cwcl_loss(y, x),
        "mw_loss": lambda x, y: losses.mw_loss(x @ y.T, jnp.eye(8, dtype=bool)),
        "alignment + uniformity": lambda x, y: losses.alignment_loss(x, y) + losses.uniformity_loss(x),
        "clip_align_uniform_loss": lambda x, y: losses.clip_align_uniform_loss(x, y),
    }
    print(f"{'loss':34s} {'value':>10s} {'|grad|':>10s}")
    for name, fn in rows.items():
        value, grads = jax.value_and_grad(fn, (0, 1))(images, texts)
        norm = jnp.sqrt(sum(jnp.sum(g**2) for g in grads))
        print(f"{name:34s} {float(value):10.4f} {float(norm):10.4f}")


if __name__ == "__main__":
    main()
