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
from collections.abc import Callable

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
# The same number from the algorithm: a table of what crosses the wire, and its evaluator.


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The quantities a byte term is written in (`b`, `D`, `N`, `G` of the docstrings)."""

    local_batch: int  # b, rows per device
    dim: int  # D
    num_devices: int  # N
    gather: int  # G, devices whose rows form a device's negative set (N, or members per group)
    groups: int  # N / G
    itemsize: int  # bytes per embedding element

    @property
    def emb(self) -> int:
        """Bytes of one device's embeddings `[b, D]`."""
        return self.local_batch * self.dim * self.itemsize

    @property
    def stats(self) -> int:
        """Bytes of one float32 per local row `[b]` (an LSE, a cotangent, a state field)."""
        return 4 * self.local_batch

    @property
    def grad(self) -> int:
        """Bytes of a float32 gradient accumulator `[b, D]` (float32 whatever the embeddings are)."""
        return 4 * self.local_batch * self.dim

    @property
    def hops(self) -> int:
        """Full hops of a ring over the `G` devices (the last, homeward hop is a term of its own)."""
        return self.gather - 1


@dataclasses.dataclass(frozen=True)
class Term:
    """One transfer of a step: `count` × the ring-algorithm cost of `collective` on `payload` bytes.

    `payload(sizes)` is the collective's output for an all-gather, its input for a reduce-scatter,
    the array for an all-reduce and the operand for a collective-permute. `group` names the devices
    it runs over: "devices" (all N), "gather" (the G of a negative set) or "groups" (one device per
    group). `what` is formatted with `hops` (and `scalar`, for the scalar gradients).
    """

    phase: str  # "forward" or "backward"
    what: str
    collective: str
    payload: Callable[[Sizes], float]
    group: str = "gather"
    count: int = 1


def _ring_cost(collective: str, group: int, payload: float) -> float:
    """Bytes one device sends (module docstring): ring algorithms over `group` devices."""
    if collective == "collective-permute":
        return payload
    if group <= 1:
        return 0.0
    share = (group - 1) / group * payload
    return 2 * share if collective == "all-reduce" else share  # all-gather, reduce-scatter


def _all_gather(phase, what, payload, **kw) -> Term:
    return Term(phase, what, "all-gather", payload, **kw)


def _reduce_scatter(phase, what, payload, **kw) -> Term:
    return Term(phase, what, "reduce-scatter", payload, **kw)


def _all_reduce(phase, what, payload, **kw) -> Term:
    return Term(phase, what, "all-reduce", payload, **kw)


def _permute(phase, what, payload) -> Term:
    return Term(phase, what, "collective-permute", payload)


# What `contrastive_jax/parallel/_reduce.py` and `_ring.py` send, per (loss, exchange). "grouped" is
# "all_gather" within a group (G = members). Every step also starts with `_LOSS_PMEAN` and, with
# scalar gradients, ends with `_SCALAR_PSUMS[exchange]` once per scalar in `_SCALARS[loss]`.
_CLIP_GATHER = (
    _all_gather("forward", "all-gather of the texts [G·b,D]", lambda z: z.gather * z.emb),
    _all_reduce("forward", "pmax of the column-LSE shift [G·b]", lambda z: z.gather * z.stats),
    _reduce_scatter(
        "forward", "psum_scatter of the column exp-sums [G·b] → [b]", lambda z: z.gather * z.stats
    ),
    _all_gather(
        "backward", "all-gather of the column-sum cotangents [b] → [G·b]", lambda z: z.gather * z.stats
    ),
    _reduce_scatter(
        "backward", "reduce-scatter of the text gradients [G·b,D] → [b,D]", lambda z: z.gather * z.emb
    ),
)
_SIGLIP_GATHER = (_CLIP_GATHER[0], _CLIP_GATHER[-1])  # no statistics to complete: a sum, not an LSE
_ISOGCLR_STATE = _all_gather(
    "forward",
    "state write-back: all-gather of ids (s32) and 8 f32 per-sample fields [N·b] (the `seen` "
    "flags are constant ones, nothing to send)",
    lambda z: z.num_devices * z.stats,
    group="devices",
    count=9,
)
_ISOGCLR_GATHER = (
    _all_gather(
        "forward",
        "all-gather of texts and images [G·b,D] (candidates of both sides)",
        lambda z: z.gather * z.emb,
        count=2,
    ),
    _reduce_scatter(
        "backward",
        "reduce-scatter of text and image gradients [G·b,D] → [b,D]",
        lambda z: z.gather * z.emb,
        count=2,
    ),
    _ISOGCLR_STATE,
)
_GRADIENT_HOME = "last hop: the text gradient [b,D] (f32) returns home"

BYTE_TERMS: dict[tuple[str, str], tuple[Term, ...]] = {
    ("clip", "all_gather"): _CLIP_GATHER,
    ("clip", "grouped"): _CLIP_GATHER,
    ("clip", "ring"): (
        _permute(
            "forward",
            "{hops} hops of a text block [b,D] + its running column LSE [b]",
            lambda z: z.hops * (z.emb + z.stats),
        ),
        _permute("forward", "last hop: the column LSE [b] returns home", lambda z: z.stats),
        _permute(
            "backward",
            "{hops} hops of text block [b,D] + column LSE and its cotangent [2b] + f32 gradient "
            "accumulator [b,D]",
            lambda z: z.hops * (z.emb + 2 * z.stats + z.grad),
        ),
        _permute("backward", _GRADIENT_HOME, lambda z: z.grad),
    ),
    ("siglip", "all_gather"): _SIGLIP_GATHER,
    ("siglip", "grouped"): _SIGLIP_GATHER,
    ("siglip", "ring"): (
        _permute("forward", "{hops} hops of a text block [b,D]", lambda z: z.hops * z.emb),
        _permute(
            "backward",
            "{hops} hops of text block [b,D] + f32 gradient accumulator [b,D]",
            lambda z: z.hops * (z.emb + z.grad),
        ),
        _permute("backward", _GRADIENT_HOME, lambda z: z.grad),
    ),
    ("isogclr", "all_gather"): _ISOGCLR_GATHER,
    ("isogclr", "grouped"): _ISOGCLR_GATHER,
    ("isogclr", "ring"): (
        _permute(
            "forward",
            "2 passes × 2 sides × {hops} hops of a candidate block [b,D]",
            lambda z: 4 * z.hops * z.emb,
        ),
        _permute(
            "backward",
            "2 sides × {hops} hops of a candidate block [b,D] + its f32 gradient accumulator [b,D]",
            lambda z: 2 * z.hops * (z.emb + z.grad),
        ),
        _permute(
            "backward",
            "2 sides: last hop, the candidates' gradient [b,D] (f32) returns home",
            lambda z: 2 * z.grad,
        ),
        _ISOGCLR_STATE,
    ),
}

_F32_SCALAR = lambda z: 4
_LOSS_PMEAN = _all_reduce("forward", "loss: pmean of the per-device loss", _F32_SCALAR, group="devices")

# A replicated scalar (logit scale or bias) meeting per-device data is cast to "varying"; the
# cast's transpose is a psum of its gradient. Where it is cast over the gather axis of a grouped
# mesh and then over the group axis, that is two psums, not one over all N.
_POSITIVE_PSUM = _all_reduce(
    "backward", "{scalar}: psum of the gradient from the positive logits", _F32_SCALAR, group="devices"
)
_SCALAR_PSUMS = {
    "all_gather": (
        _POSITIVE_PSUM,
        _all_reduce(
            "backward", "{scalar}: psum of the gradient from the pairwise term", _F32_SCALAR, group="devices"
        ),
    ),
    "grouped": (
        _POSITIVE_PSUM,
        _all_reduce("backward", "{scalar}: psum over groups (pairwise term)", _F32_SCALAR, group="groups"),
        _all_reduce("backward", "{scalar}: psum over members (pairwise term)", _F32_SCALAR),
    ),
}
_SCALAR_PSUMS["ring"] = _SCALAR_PSUMS["all_gather"]
# The replicated scalars whose gradient a step takes, one entry per psum pair (SigLIP: scale, bias).
_SCALARS = {"clip": ("logit scale",), "siglip": ("logit scale and bias",) * 2, "isogclr": ()}


def _sizes(exchange, local_batch, dim, num_devices, members, itemsize) -> Sizes:
    if exchange == "grouped":
        if not members or num_devices % members:
            raise ValueError(f"grouped needs `members` dividing num_devices, got {members} and {num_devices}")
        gather = members
    elif exchange in ("all_gather", "ring"):
        gather = num_devices
    else:
        raise ValueError(f"unknown exchange {exchange!r}")
    return Sizes(local_batch, dim, num_devices, gather, num_devices // gather, itemsize)


def _evaluate(term: Term, sizes: Sizes, scalar: str = "") -> dict:
    group = {"devices": sizes.num_devices, "gather": sizes.gather, "groups": sizes.groups}[term.group]
    nbytes = term.count * _ring_cost(term.collective, group, term.payload(sizes))
    what = term.what.format(hops=sizes.hops, scalar=scalar)
    return dict(phase=term.phase, what=what, collective=term.collective, bytes=float(nbytes))


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
    group. The transfers are the rows of `BYTE_TERMS[(loss, exchange)]` (which array crosses
    the wire, how often, and why), between the loss's pmean and its scalars' gradient psums;
    costs per collective as in the module docstring. Statistics (LSEs and their cotangents,
    the ring's gradient accumulators) are float32 whatever the embeddings' dtype.

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

    Example:
      >>> out = exchange_bytes("siglip", "ring", local_batch=2, dim=4, num_devices=2, scalar_grads=False)
      >>> [t["bytes"] for t in out["terms"]]  # pmean, a block's hop, block + f32 accumulator, home
      [4.0, 32.0, 64.0, 32.0]
    """
    sizes = _sizes(exchange, local_batch, dim, num_devices, members, itemsize)
    if loss not in _SCALARS:
        raise ValueError(f"unknown loss {loss!r}")
    terms = [_evaluate(_LOSS_PMEAN, sizes)]
    terms += [_evaluate(term, sizes) for term in BYTE_TERMS[(loss, exchange)]]
    for scalar in _SCALARS[loss] if scalar_grads else ():
        terms += [_evaluate(term, sizes, scalar) for term in _SCALAR_PSUMS[exchange]]
    forward = sum(t["bytes"] for t in terms if t["phase"] == "forward")
    backward = sum(t["bytes"] for t in terms if t["phase"] == "backward")
    return dict(total=forward + backward, forward=forward, backward=backward, terms=terms)
