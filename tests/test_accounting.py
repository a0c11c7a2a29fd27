"""The HLO collective counter and the analytic accounting of the exchanges agree, exactly.

`collective_bytes` reads what XLA compiled; `exchange_bytes` predicts it from the algorithm (both
in benchmarks/hlo_accounting.py, measurement tooling outside the library). Each would have to be wrong in the same way for these to pass: a missed
collective, a wrong ring cost, a loop not multiplied by its trip count, or a change to
`_reduce.py` / `_ring.py` that changes the traffic without updating the accounting.
"""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import contrastive_jax as cj
from benchmarks import hlo_accounting
from benchmarks.hlo_accounting import collective_bytes, exchange_bytes
from contrastive_jax import losses, parallel

DEVICES, BATCH, DIM = 4, 8, 16  # local batch 8 per device, as in the benchmark's layout


def compiled_clip_step(exchange, block_size):
    mesh = parallel.data_mesh("data", devices=jax.devices()[:DEVICES])
    step = jax.shard_map(
        lambda x, y, s: losses.clip_loss(x, y, s, axis_name="data", exchange=exchange, block_size=block_size),
        mesh=mesh,
        in_specs=(P("data"), P("data"), P()),
        out_specs=P(),
    )
    keys = jax.random.split(jax.random.key(0))
    x, y = (cj.l2_normalize(jax.random.normal(k, (DEVICES * BATCH, DIM))) for k in keys)
    return jax.jit(jax.value_and_grad(step, (0, 1, 2))).lower(x, y, jnp.float32(5.0)).compile()


@pytest.mark.parametrize("block_size", [None, 4])
@pytest.mark.parametrize("exchange", ["all_gather", "ring"])
def test_hlo_count_equals_analytic_clip(exchange, block_size):
    counted = collective_bytes(compiled_clip_step(exchange, block_size).as_text())
    predicted = exchange_bytes("clip", exchange, local_batch=BATCH, dim=DIM, num_devices=DEVICES)
    assert counted["unknown_trip_counts"] == []
    np.testing.assert_allclose(counted["total"], predicted["total"], rtol=1e-12)
    # The embedding traffic dominates and is what the two must agree on term by term.
    emb = BATCH * DIM * 4
    if exchange == "all_gather":
        assert counted["by_kind"]["all-gather"] >= (DEVICES - 1) * emb  # the texts
        assert counted["by_kind"]["reduce-scatter"] >= (DEVICES - 1) * emb  # their gradients
        assert "collective-permute" not in counted["by_kind"]
    else:
        hop_loops = [trips for _, trips in counted["while_loops"] if trips == DEVICES - 1]
        assert len(hop_loops) == 2  # the forward ring and the backward ring, found with their trip counts
        assert set(counted["by_kind"]) == {"collective-permute", "all-reduce"}
        # forward: 3 hops of a block, backward: 3 hops of a block and its f32 gradient, then it goes home
        assert counted["by_kind"]["collective-permute"] > 3 * (DEVICES - 1) * emb


def test_ring_and_gather_ratio():
    """The ring sends about 3/2 of all_gather's embedding bytes at this size (1 + 2 blocks per hop)."""
    gather = exchange_bytes("clip", "all_gather", local_batch=4096, dim=512, num_devices=8)
    ring = exchange_bytes("clip", "ring", local_batch=4096, dim=512, num_devices=8)
    assert 1.4 < ring["total"] / gather["total"] < 1.6
    grouped = exchange_bytes("clip", "grouped", local_batch=4096, dim=512, num_devices=8, members=4)
    assert grouped["total"] < gather["total"]


SYNTHETIC = """HloModule synthetic, num_partitions=8

%reducer (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %add = f32[] add(%a, %b)
}

%async_rs (p: f32[64,4]) -> f32[8,4] {
  %p = f32[64,4]{1,0} parameter(0)
  ROOT %rs = f32[8,4]{1,0} reduce-scatter(%p), replica_groups=[1,8]<=[8], dimensions={0}, to_apply=%reducer
}

%body (t: (s32[], bf16[16,4])) -> (s32[], bf16[16,4]) {
  %t = (s32[], bf16[16,4]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%t), index=0
  %x = bf16[16,4]{1,0} get-tuple-element(%t), index=1
  %cp = (bf16[16,4]{1,0}, bf16[16,4]{1,0}, u32[], u32[]) collective-permute-start(%x), source_target_pairs={{0,1},{1,0}}
  %cpd = bf16[16,4]{1,0} collective-permute-done(%cp)
  ROOT %out = (s32[], bf16[16,4]{1,0}) tuple(%i, %cpd)
}

%cond (t: (s32[], bf16[16,4])) -> pred[] {
  %t = (s32[], bf16[16,4]{1,0}) parameter(0)
  ROOT %c = pred[] constant(true)
}

%loop2_body (t: (s32[], f32[2])) -> (s32[], f32[2]) {
  %t = (s32[], f32[2]{0}) parameter(0)
  %v = f32[2]{0} get-tuple-element(%t), index=1
  %ar = f32[2]{0} all-reduce(%v), replica_groups={}, to_apply=%reducer
  %i = s32[] get-tuple-element(%t), index=0
  ROOT %out = (s32[], f32[2]{0}) tuple(%i, %ar)
}

ENTRY %main (x: f32[8,4], y: bf16[16,4]) -> f32[8,4] {
  %x = f32[8,4]{1,0} parameter(0)
  %y = bf16[16,4]{1,0} parameter(1)
  %ags = (f32[8,4]{1,0}, f32[64,4]{1,0}) all-gather-start(%x), replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={0}
  %agd = f32[64,4]{1,0} all-gather-done(%ags)
  %rss = ((f32[64,4]{1,0}), f32[8,4]{1,0}) async-start(%agd), calls=%async_rs
  %rsd = f32[8,4]{1,0} async-done(%rss), calls=%async_rs
  %init = (s32[], bf16[16,4]{1,0}) tuple(%c0, %y)
  %w = (s32[], bf16[16,4]{1,0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"5"}}
  %init2 = (s32[], f32[2]{0}) tuple(%c0, %v2)
  %w2 = (s32[], f32[2]{0}) while(%init2), condition=%cond, body=%loop2_body
  ROOT %r = f32[8,4]{1,0} copy(%rsd)
}
"""


def test_parser_on_async_ops_loops_and_group_formats():
    out = collective_bytes(SYNTHETIC)
    kinds = out["by_kind"]
    assert kinds["all-gather"] == pytest.approx(3 / 4 * 64 * 4 * 4)  # groups of 4, output f32[64,4]
    assert kinds["reduce-scatter"] == pytest.approx(7 * 8 * 4 * 4)  # iota groups of 8, counted once
    assert kinds["collective-permute"] == pytest.approx(5 * 16 * 4 * 2)  # bf16 block × 5 trips
    assert kinds["all-reduce"] == pytest.approx(2 * 7 / 8 * 8)  # {} = all 8 devices, unknown trips: once
    assert out["unknown_trip_counts"] == ["w2"]
    assert dict(out["while_loops"]) == {"w": 5, "w2": None}


def test_docstring_example():
    assert doctest.testmod(hlo_accounting).failed == 0


def test_group_size_reads_every_replica_group_syntax():
    from benchmarks.hlo_accounting import _group_size

    assert _group_size("replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={0}", 8) == 4
    assert _group_size("replica_groups=[2,4]<=[8], dimensions={0}", 8) == 4
    assert _group_size("replica_groups=mesh['group'=2,'member'=4] {'member'}, dimensions={0}", 8) == 4
    assert _group_size("replica_groups=mesh['group'=2,'member'=4] {'group'}, dimensions={0}", 8) == 2
    assert _group_size("replica_groups=mesh['a'=2,'b'=4] {'a','b'}, dimensions={0}", 8) == 8
    assert _group_size("replica_groups={}, dimensions={0}", 8) == 8
    assert _group_size("replica_groups=[2,4]<=[4,2]T(1,0), dimensions={0}", 8) == 4


@pytest.mark.parametrize(
    "attributes",
    [
        "dimensions={0}",  # no replica_groups at all
        "replica_groups=<0..3>, dimensions={0}",  # a syntax it was never taught
        "replica_groups=mesh['group'=2] {'member'}, dimensions={0}",  # an axis the mesh lacks
    ],
)
def test_group_size_raises_on_what_it_cannot_read(attributes):
    from benchmarks.hlo_accounting import _group_size

    with pytest.raises(ValueError):
        _group_size(attributes, 8)
    hlo = SYNTHETIC.replace("replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={0}", attributes)
    with pytest.raises(ValueError):  # and so does the counter: it never assumes all devices
        collective_bytes(hlo)


@pytest.mark.parametrize("exchange", ["all_gather", "ring"])
def test_hlo_count_equals_analytic_isogclr(exchange):
    mesh = parallel.data_mesh("data", devices=jax.devices()[:DEVICES])
    step = jax.shard_map(
        lambda x, y, i, st: losses.isogclr_loss(
            x, y, i, st, axis_name="data", exchange=exchange, check_indices=False
        ),
        mesh=mesh,
        in_specs=(P("data"), P("data"), P("data"), P()),
        out_specs=(P(), P()),
    )
    emb = jax.ShapeDtypeStruct((DEVICES * BATCH, DIM), jnp.float32)
    ids = jax.ShapeDtypeStruct((DEVICES * BATCH,), jnp.int32)
    state = losses.isogclr_init(DEVICES * BATCH)
    compiled = jax.jit(jax.value_and_grad(step, (0, 1), has_aux=True)).lower(emb, emb, ids, state).compile()
    counted = collective_bytes(compiled.as_text())
    predicted = exchange_bytes("isogclr", exchange, local_batch=BATCH, dim=DIM, num_devices=DEVICES)
    assert counted["unknown_trip_counts"] == []
    np.testing.assert_allclose(counted["total"], predicted["total"], rtol=1e-12)
