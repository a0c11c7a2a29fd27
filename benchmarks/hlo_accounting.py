"""How many bytes each device sends per step: counted from compiled HLO, and predicted from the algorithm.

Measurement tooling, not part of the library: `from benchmarks.hlo_accounting import
collective_bytes, exchange_bytes` with the repository root on `sys.path` (the tests have it; the
benchmark scripts put it there). Two independent accountings of the communication of a negative
exchange, so that each checks the other (tests/test_accounting.py) and the benchmark
(benchmarks/exchange_strategies.py) can report both:

* `collective_bytes(hlo_text)` reads the *compiled* HLO of a step (`jax.jit(f).lower(...)
  .compile().as_text()`) and adds up every collective XLA kept, after its own combining and
  simplification passes. Collectives inside `while` loops (the ring's `lax.scan` over hops) are
  multiplied by the trip count XLA annotates in the loop's `backend_config`
  (`"known_trip_count":{"n":"7"}`). Replica groups in a syntax it does not know raise a
  ValueError (XLA's printer has changed before): it never guesses a group size.
* `exchange_bytes(...)` predicts the same number from what `contrastive_jax/parallel/_reduce.py`
  and `_ring.py` do, term by term (which array crosses the wire, how often, and why).

Both use the standard per-device cost of bandwidth-optimal (ring) collectives over a group of
`G` devices: all-gather `(G−1)/G × output bytes`, reduce-scatter `(G−1)/G × input bytes`,
all-reduce `2(G−1)/G × bytes` (a reduce-scatter then an all-gather), all-to-all
`(G−1)/G × bytes`, collective-permute (`ppermute`) the operand's bytes. These are the bytes a
device puts on its links; what a given backend actually does (tree all-reduces, NVLink
multicast, in-network reduction) can differ, but they rank the strategies correctly and are
what the bandwidth term of a step's time scales with.
"""

from __future__ import annotations

import dataclasses
import math
import re

__all__ = ["collective_bytes", "exchange_bytes"]

# Bytes per element of XLA's primitive types (sub-byte types count as fractions).
_ITEMSIZE = {
    "pred": 1,
    "s2": 0.25,
    "u2": 0.25,
    "s4": 0.5,
    "u4": 0.5,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "s32": 4,
    "u32": 4,
    "s64": 8,
    "u64": 8,
    "f16": 2,
    "bf16": 2,
    "f32": 4,
    "f64": 8,
    "c64": 8,
    "c128": 16,
    "token": 0,
}
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([^\]]*)\]")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([a-z][a-z0-9\-]*)\((.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
_TRIP_COUNT = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_NUM_PARTITIONS = re.compile(r"\bnum_partitions=(\d+)")
_REPLICA_COUNT = re.compile(r"\breplica_count=(\d+)")

# Collective opcodes (sync and async-start forms) → the cost family they belong to.
_KINDS = {
    "all-gather": "all-gather",
    "all-gather-start": "all-gather",
    "all-reduce": "all-reduce",
    "all-reduce-start": "all-reduce",
    "reduce-scatter": "reduce-scatter",
    "all-to-all": "all-to-all",
    "collective-permute": "collective-permute",
    "collective-permute-start": "collective-permute",
    "send": "send",
}


@dataclasses.dataclass(frozen=True)
class _Instruction:
    name: str
    shape: str
    opcode: str
    attributes: str
    op_name: str


def _element_bytes(dtype: str) -> float:
    if dtype in _ITEMSIZE:
        return _ITEMSIZE[dtype]
    match = re.match(r"f(\d+)e", dtype)  # f8e4m3fn, f8e5m2, f4e2m1fn, ...
    if match:
        return int(match.group(1)) / 8
    raise ValueError(f"unknown HLO element type {dtype!r}")


def shape_bytes(shape: str) -> float:
    """Bytes of an HLO shape string (arrays summed over a tuple), e.g. `(f32[8,16]{1,0}, s32[])` → 516."""
    total = 0.0
    for dtype, dims in _ARRAY.findall(shape):
        sizes = [int(d.strip().lstrip("<=")) for d in dims.split(",") if d.strip()]
        total += _element_bytes(dtype) * math.prod(sizes)
    return total


def _tuple_elements(shape: str) -> list[str]:
    """Top-level elements of a tuple shape (`[shape]` for an array shape)."""
    shape = re.sub(r"/\*.*?\*/", "", shape).strip()
    if not shape.startswith("("):
        return [shape]
    elements, depth, start = [], 0, 1
    for i, char in enumerate(shape):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                elements.append(shape[start:i])
        elif char == "," and depth == 1:
            elements.append(shape[start:i])
            start = i + 1
    return [e.strip() for e in elements if e.strip()]


def _group_size(attributes: str, num_devices: int) -> int:
    """Devices per replica group of a collective, from its attributes in compiled HLO text.

    Explicit `{{0,1},{2,3}}` → 2; iota `[2,4]<=[8]` (optionally transposed, `[2,4]<=[4,2]T(1,0)`)
    → 4; empty `{}` → all `num_devices`; newer XLA's named form `mesh['group'=2,'member'=4]
    {'member'}` → 4 (the product of the axes listed in braces, `{}` for all of them).

    Raises:
      ValueError: no `replica_groups` attribute, or a syntax not listed above.
    """
    start = attributes.find("replica_groups=")
    if start < 0:
        raise ValueError(f"collective without replica_groups: {attributes[:120]!r}")
    groups = attributes[start + len("replica_groups=") :]
    match = re.match(r"mesh\[([^\]]*)\]\s*\{([^}]*)\}", groups)
    if match:
        sizes = {k: int(v) for k, v in re.findall(r"'([^']+)'=(\d+)", match.group(1))}
        selected = re.findall(r"'([^']+)'", match.group(2))
        unknown = [a for a in selected if a not in sizes]
        if not sizes or unknown:
            raise ValueError(f"unreadable named replica groups: {groups[:120]!r}")
        return math.prod(sizes[a] for a in selected) if selected else math.prod(sizes.values())
    match = re.match(r"\[(\d+),(\d+)\]<=\[[\d,]+\](?:T\([\d,]+\))?(?=[,\s]|$)", groups)
    if match:
        return int(match.group(2))
    match = re.match(r"\{\{([\d,]*)\}(?:,\{[\d,]*\})*\}(?=[,\s]|$)", groups)
    if match:
        return len([d for d in match.group(1).split(",") if d.strip()])
    if re.match(r"\{\}(?=[,\s]|$)", groups):
        return num_devices
    raise ValueError(f"unknown replica_groups syntax: {groups[:120]!r}; teach _group_size to read it")


def _parse(hlo_text: str) -> tuple[dict[str, list[_Instruction]], str | None]:
    """Computations of an HLO module (name → instructions) and the name of its entry computation."""
    computations: dict[str, list[_Instruction]] = {}
    entry, current = None, None
    for line in hlo_text.splitlines():
        if current is None:
            match = _COMPUTATION.match(line)
            if match and not line.startswith("HloModule"):
                current = match.group(1)
                computations[current] = []
                if line.startswith("ENTRY"):
                    entry = current
            continue
        if line.startswith("}"):
            current = None
            continue
        match = _INSTRUCTION.match(line)
        if match:
            name, shape, opcode, rest = match.groups()
            op_name = _OP_NAME.search(rest)
            attributes = re.sub(r"metadata=\{[^}]*\}", "", rest)
            computations[current].append(
                _Instruction(name, shape, opcode, attributes, op_name.group(1) if op_name else "")
            )
    return computations, entry


def _callees(inst: _Instruction) -> list[tuple[str, int | None, str]]:
    """Computations an instruction runs: `(name, times per execution, role)`; times None = unknown."""
    attrs, opcode = inst.attributes, inst.opcode
    if opcode == "while":
        trip = _TRIP_COUNT.search(attrs)
        trips = int(trip.group(1)) if trip else None
        body = re.search(r"\bbody=%?([\w.\-]+)", attrs)
        condition = re.search(r"\bcondition=%?([\w.\-]+)", attrs)
        out = []
        if body:
            out.append((body.group(1), trips, "body"))
        if condition:
            out.append((condition.group(1), None if trips is None else trips + 1, "condition"))
        return out
    if opcode == "conditional":  # every branch counted once: an upper bound if branches communicate
        names = re.findall(r"\b(?:true|false)_computation=%?([\w.\-]+)", attrs)
        branches = re.search(r"\bbranch_computations=\{([^}]*)\}", attrs)
        if branches:
            names += [n.strip().lstrip("%") for n in branches.group(1).split(",") if n.strip()]
        return [(n, 1, "branch") for n in names]
    if opcode.endswith("-done") or opcode.endswith("-update"):
        return []  # the matching *-start already accounted for the async computation
    called = re.search(r"\bcalls=%?([\w.\-]+)", attrs)
    if called:  # fusion, async-start, custom-call with a body
        return [(called.group(1), 1, "calls")]
    if opcode == "call":
        applied = re.search(r"\bto_apply=%?([\w.\-]+)", attrs)
        if applied:
            return [(applied.group(1), 1, "call")]
    return []


def _cost(inst: _Instruction, kind: str, num_devices: int) -> tuple[float, int, float]:
    """`(payload bytes, group size, bytes sent per device)` of one execution of a collective."""
    elements = _tuple_elements(inst.shape)
    if inst.opcode == "all-gather-start":  # (operands..., outputs...)
        payload = sum(shape_bytes(e) for e in elements[len(elements) // 2 :])
    elif inst.opcode == "collective-permute-start":  # (operand, output, contexts...)
        payload = shape_bytes(elements[1]) if len(elements) > 1 else shape_bytes(inst.shape)
    elif inst.opcode == "send":  # (operand, context, token)
        payload = shape_bytes(elements[0])
    else:
        payload = shape_bytes(inst.shape)
    if kind in ("collective-permute", "send"):
        pairs = re.search(r"source_target_pairs=\{(.*?)\}\}", inst.attributes)
        moves = re.findall(r"\{(\d+),(\d+)", pairs.group(0)) if pairs else []
        sends = any(a != b for a, b in moves) or pairs is None
        return payload, len(moves), payload if sends else 0.0
    group = _group_size(inst.attributes, num_devices)
    if group <= 1:
        return payload, group, 0.0
    if kind == "all-reduce":
        return payload, group, 2 * (group - 1) / group * payload
    if kind == "reduce-scatter":  # the output is 1/G of the input
        return payload, group, (group - 1) * payload
    return payload, group, (group - 1) / group * payload  # all-gather (output), all-to-all


def collective_bytes(hlo_text: str, *, num_devices: int | None = None) -> dict:
    """Bytes each device sends in one execution of a compiled XLA program, from its HLO text.

    Every collective reachable from the entry computation is counted — `all-gather`,
    `reduce-scatter`, `all-reduce`, `all-to-all`, `collective-permute` and `send` (and their
    async `*-start` forms; `*-done` ops are not counted twice) — inside fusions, calls, async
    wrappers and `while` loops, with a loop's body multiplied by XLA's `known_trip_count`.
    The cost per execution is the ring-algorithm cost per device (module docstring), with `G`
    the size of the op's replica groups.

    Use it on the *compiled* text (`jax.jit(f).lower(*args).compile().as_text()`): that is
    after XLA has combined, split, or removed collectives, so it is what actually runs.

    Args:
      hlo_text: an HLO module in text form.
      num_devices: devices taking part when an op has empty `replica_groups` (meaning all of
        them); default: the module's `num_partitions` (times `replica_count`).

    Returns:
      A dict with
        `total`: bytes sent per device per execution (float; ring fractions need not be whole);
        `by_kind`: the total split by collective family;
        `collectives`: one dict per collective op (`kind`, `name`, `shape`, `group_size`,
        `payload_bytes`, `executions` per step, `bytes_sent` over all executions, `op_name` from
        the JAX metadata);
        `while_loops`: `(name, trip_count)` of every loop reached (trip count None if unknown);
        `unknown_trip_counts`: loops without a `known_trip_count` that contain collectives
        (counted as running once; the total is then a lower bound).

    Example:
      >>> hlo = '''HloModule m, num_partitions=4
      ... ENTRY %main (p: f32[8,16]) -> f32[32,16] {
      ...   %p = f32[8,16]{1,0} parameter(0)
      ...   ROOT %ag = f32[32,16]{1,0} all-gather(%p), replica_groups={{0,1,2,3}}, dimensions={0}
      ... }'''
      >>> collective_bytes(hlo)["total"]  # 3/4 of the 2048-byte output
      1536.0
    """
    computations, entry = _parse(hlo_text)
    if entry is None:
        raise ValueError("no ENTRY computation found: pass the text of a whole HLO module")
    if num_devices is None:
        partitions = _NUM_PARTITIONS.search(hlo_text)
        replicas = _REPLICA_COUNT.search(hlo_text)
        num_devices = (int(partitions.group(1)) if partitions else 1) * (
            int(replicas.group(1)) if replicas else 1
        )

    collectives: list[dict] = []
    loops: dict[str, int | None] = {}
    unknown: set[str] = set()

    def visit(name: str, executions: int, unknown_loops: tuple[str, ...], depth: int) -> None:
        if depth > 64 or name not in computations:
            return
        for inst in computations[name]:
            kind = _KINDS.get(inst.opcode)
            if kind is not None:
                payload, group, sent = _cost(inst, kind, num_devices)
                collectives.append(
                    dict(
                        kind=kind,
                        name=inst.name,
                        computation=name,
                        shape=re.sub(r"/\*.*?\*/", "", inst.shape),
                        group_size=group,
                        payload_bytes=payload,
                        executions=executions,
                        bytes_sent=sent * executions,
                        op_name=inst.op_name,
                    )
                )
                if sent:
                    unknown.update(unknown_loops)
            for callee, times, role in _callees(inst):
                if role == "body":
                    loops[inst.name] = times
                inner_unknown = unknown_loops + ((inst.name,) if times is None else ())
                visit(callee, executions * (1 if times is None else times), inner_unknown, depth + 1)

    visit(entry, 1, (), 0)
    by_kind: dict[str, float] = {}
    for c in collectives:
        by_kind[c["kind"]] = by_kind.get(c["kind"], 0.0) + c["bytes_sent"]
    return dict(
        total=sum(c["bytes_sent"] for c in collectives),
        by_kind=by_kind,
        collectives=collectives,
        while_loops=sorted(loops.items()),
        unknown_trip_counts=sorted(unknown),
    )


# ----------------------------------------------------------------------------------------------
# The same number from the algorithm.


def _all_gather(group: int, output_bytes: float) -> float:
    return (group - 1) / group * output_bytes if group > 1 else 0.0


def _reduce_scatter(group: int, input_bytes: float) -> float:
    return (group - 1) / group * input_bytes if group > 1 else 0.0


def _all_reduce(group: int, nbytes: float) -> float:
    return 2 * (group - 1) / group * nbytes if group > 1 else 0.0


def exchange_bytes(
    loss: str,
    exchange: str,
    *,
    local_batch: int,
    dim: int,
    num_devices: int,
    members: int | None = None,
    itemsize: int = 4,
    scalar_grads: bool = True,
) -> dict:
    """Bytes each device sends in one value-and-gradient step of a loss, from the algorithm.

    The step is `jax.value_and_grad` (w.r.t. the embeddings and, with `scalar_grads`, the
    logit scale / bias) of the loss under `jax.shard_map`, on a 1-D mesh of `num_devices`
    devices, or for `exchange="grouped"` a `(group, member)` mesh with `members` devices per
    group. Costs per collective as in the module docstring. Statistics (LSEs and their
    cotangents, the ring's gradient accumulators) are float32 whatever the embeddings' dtype.

    Args:
      loss: "clip", "siglip" or "isogclr" (replicated state, `learn_temperature=True`).
      exchange: "all_gather", "ring" or "grouped".
      local_batch: rows per device, `b`.
      dim: embedding size `D`.
      num_devices: devices in the mesh, `N`.
      members: devices per group for "grouped" (negatives come from `members·b` rows).
      itemsize: bytes per embedding element (4 for float32, 2 for bfloat16).
      scalar_grads: whether the gradient w.r.t. logit scale (and SigLIP's bias) is taken.

    Returns:
      `{"total": bytes, "forward": bytes, "backward": bytes, "terms": [{"phase", "what",
      "collective", "bytes"}, ...]}`, `terms` naming every transfer.
    """
    b, d, n, s = local_batch, dim, num_devices, itemsize
    if exchange == "grouped":
        if not members or n % members:
            raise ValueError(f"grouped needs `members` dividing num_devices, got {members} and {n}")
        gather, groups = members, n // members
    elif exchange in ("all_gather", "ring"):
        gather, groups = n, 1
    else:
        raise ValueError(f"unknown exchange {exchange!r}")
    emb = b * d * s  # one device's embeddings
    terms: list[dict] = []

    def add(phase, what, collective, nbytes):
        terms.append(dict(phase=phase, what=what, collective=collective, bytes=float(nbytes)))

    def scalar_psums(count, what):
        # A replicated scalar (logit scale or bias) meeting per-device data is cast to "varying";
        # the cast's transpose is a psum of its gradient. Where it is cast over the gather axis of
        # a grouped mesh and then over the group axis, that is two psums, not one over all N.
        for _ in range(count):
            add(
                "backward",
                f"{what}: psum of the gradient from the positive logits",
                "all-reduce",
                _all_reduce(n, 4),
            )
            if exchange == "grouped":
                add(
                    "backward",
                    f"{what}: psum over groups (pairwise term)",
                    "all-reduce",
                    _all_reduce(groups, 4),
                )
                add(
                    "backward",
                    f"{what}: psum over members (pairwise term)",
                    "all-reduce",
                    _all_reduce(gather, 4),
                )
            else:
                add(
                    "backward",
                    f"{what}: psum of the gradient from the pairwise term",
                    "all-reduce",
                    _all_reduce(n, 4),
                )

    add("forward", "loss: pmean of the per-device loss", "all-reduce", _all_reduce(n, 4))
    hops = gather - 1
    if loss == "clip":
        if exchange == "ring":
            add(
                "forward",
                f"{hops} hops of a text block [b,D] + its running column LSE [b]",
                "collective-permute",
                hops * (emb + 4 * b),
            )
            add("forward", "last hop: the column LSE [b] returns home", "collective-permute", 4 * b)
            add(
                "backward",
                f"{hops} hops of text block [b,D] + column LSE and its cotangent [2b] + f32 gradient accumulator [b,D]",
                "collective-permute",
                hops * (emb + 8 * b + 4 * b * d),
            )
            add(
                "backward",
                "last hop: the text gradient [b,D] (f32) returns home",
                "collective-permute",
                4 * b * d,
            )
        else:
            add("forward", "all-gather of the texts [G·b,D]", "all-gather", _all_gather(gather, gather * emb))
            add(
                "forward",
                "pmax of the column-LSE shift [G·b]",
                "all-reduce",
                _all_reduce(gather, 4 * gather * b),
            )
            add(
                "forward",
                "psum_scatter of the column exp-sums [G·b] → [b]",
                "reduce-scatter",
                _reduce_scatter(gather, 4 * gather * b),
            )
            add(
                "backward",
                "all-gather of the column-sum cotangents [b] → [G·b]",
                "all-gather",
                _all_gather(gather, 4 * gather * b),
            )
            add(
                "backward",
                "reduce-scatter of the text gradients [G·b,D] → [b,D]",
                "reduce-scatter",
                _reduce_scatter(gather, gather * emb),
            )
        if scalar_grads:
            scalar_psums(1, "logit scale")
    elif loss == "siglip":
        if exchange == "ring":
            add("forward", f"{hops} hops of a text block [b,D]", "collective-permute", hops * emb)
            add(
                "backward",
                f"{hops} hops of text block [b,D] + f32 gradient accumulator [b,D]",
                "collective-permute",
                hops * (emb + 4 * b * d),
            )
            add(
                "backward",
                "last hop: the text gradient [b,D] (f32) returns home",
                "collective-permute",
                4 * b * d,
            )
        else:
            add("forward", "all-gather of the texts [G·b,D]", "all-gather", _all_gather(gather, gather * emb))
            add(
                "backward",
                "reduce-scatter of the text gradients [G·b,D] → [b,D]",
                "reduce-scatter",
                _reduce_scatter(gather, gather * emb),
            )
        if scalar_grads:
            scalar_psums(2, "logit scale and bias")
    elif loss == "isogclr":
        if exchange == "ring":
            add(
                "forward",
                f"2 passes × 2 sides × {hops} hops of a candidate block [b,D]",
                "collective-permute",
                4 * hops * emb,
            )
            add(
                "backward",
                f"2 sides × {hops} hops of a candidate block [b,D] + its f32 gradient accumulator [b,D]",
                "collective-permute",
                2 * hops * (emb + 4 * b * d),
            )
            add(
                "backward",
                "2 sides: last hop, the candidates' gradient [b,D] (f32) returns home",
                "collective-permute",
                2 * 4 * b * d,
            )
        else:
            add(
                "forward",
                "all-gather of texts and images [G·b,D] (candidates of both sides)",
                "all-gather",
                2 * _all_gather(gather, gather * emb),
            )
            add(
                "backward",
                "reduce-scatter of text and image gradients [G·b,D] → [b,D]",
                "reduce-scatter",
                2 * _reduce_scatter(gather, gather * emb),
            )
        add(
            "forward",
            "state write-back: all-gather of ids (s32) and 8 f32 per-sample fields [N·b] (the `seen` "
            "flags are constant ones, nothing to send)",
            "all-gather",
            9 * _all_gather(n, 4 * n * b),
        )
    else:
        raise ValueError(f"unknown loss {loss!r}")
    forward = sum(t["bytes"] for t in terms if t["phase"] == "forward")
    backward = sum(t["bytes"] for t in terms if t["phase"] == "backward")
    return dict(total=forward + backward, forward=forward, backward=backward, terms=terms)
