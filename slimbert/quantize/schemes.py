"""Choose the INT8 scheme by measurement on the machine the artifact is built for.

Which scheme is both fast and accurate depends on the CPU's kernels and on the model's
weights, and a table keyed by the instruction set gets it wrong: on an AVX2 EPYC the
table's u8 x s8 with 7-bit weights per tensor lost 2.8 dev points on the default student,
where the same weights per channel lost none at 0.61 of fp32's latency (issue 28). So the
table only orders the tries. Every candidate (weight type, 7-bit weights or not, per tensor
or per channel, and for static INT8 QOperator or QDQ) is quantized, scored on dev as it is
served (one example at a time when activation scales are dynamic) and timed at batch 1 in
one interleaved run; the fastest that keeps the tolerance wins. When none keeps it, the
smallest drop is taken on to the node fallback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from slimbert.hw import Int8Formats
from slimbert.quantize.config import OnnxQuantizeConfig

# speeds within this share of the fastest are a tie on a shared machine; the tie goes to the
# smaller dev drop
SPEED_TIE = 0.03
_SHORT = {"uint8": "u8", "int8": "s8"}


@dataclass(frozen=True)
class Int8Scheme:
    """One way to write an INT8 graph: types, weight bits, weight granularity, graph format."""

    activation_type: str
    weight_type: str
    reduce_range: bool
    per_channel: bool
    format: str  # "qoperator" or "qdq"; dynamic INT8 is QOperator (ORT's integer ops)

    @property
    def name(self) -> str:
        bits = "7bit" if self.reduce_range else "8bit"
        granularity = "per-channel" if self.per_channel else "per-tensor"
        return (f"{_SHORT[self.activation_type]}{_SHORT[self.weight_type]}-{bits}-{granularity}"
                + ("-qdq" if self.format == "qdq" else ""))

    def formats(self, table: Int8Formats) -> Int8Formats:
        """The Int8Formats a QuantJob reads, for the table's instruction set."""
        same = (self.activation_type, self.weight_type, self.reduce_range) == (
            table.activation_type, table.weight_type, table.reduce_range)
        why = table.why if same else f"measured on dev against the {table.isa} table's choice"
        return Int8Formats(table.isa, self.activation_type, self.weight_type,  # type: ignore[arg-type]
                           self.reduce_range, why)

    def config(self, cfg: OnnxQuantizeConfig) -> OnnxQuantizeConfig:
        """``cfg`` with this scheme's settings fixed (what the quantizer methods read)."""
        return dataclasses.replace(cfg, activation_type=self.activation_type, weight_type=self.weight_type,
                                   reduce_range=self.reduce_range, per_channel=self.per_channel,
                                   format=self.format)


def _other_types(table: Int8Formats) -> tuple[str, str]:
    """The alternative pair of types to the table's: u8 x u8 on x86, u8 x s8 on ARM."""
    return ("uint8", "uint8") if table.activation_type == "uint8" else ("uint8", "int8")


def candidate_schemes(cfg: OnnxQuantizeConfig) -> list[Int8Scheme]:
    """The schemes worth trying for ``cfg``, the table's own first.

    What the recipe fixes (types, reduce_range, per_channel, format) is not varied;
    ``schemes: table`` tries the table's scheme alone, as slimbert did before measuring.
    Dynamic INT8 activations are always u8 (ORT's DynamicQuantizeLinear).
    """
    first = cfg.int8_formats()
    per_channel = cfg.per_channel if cfg.per_channel is not None else False
    fmt = "qoperator" if cfg.mode == "dynamic" or cfg.format == "auto" else cfg.format
    table_scheme = Int8Scheme(first.activation_type if cfg.mode != "dynamic" else "uint8", first.weight_type,
                              first.reduce_range, per_channel, fmt)
    if cfg.schemes == "table":
        return [table_scheme]
    own = (table_scheme.activation_type, table_scheme.weight_type)
    if cfg.activation_type != "auto" or cfg.weight_type != "auto":
        types = [own]
    elif cfg.mode == "dynamic":  # weights s8 or u8; activations are u8 either way
        types = [own, ("uint8", "uint8" if own[1] == "int8" else "int8")]
    else:
        types = [own, _other_types(first)]
    ranges = [first.reduce_range] + ([] if cfg.reduce_range is not None else [not first.reduce_range])
    channels = [per_channel] if cfg.per_channel is not None else [False, True]
    formats = [fmt] if cfg.mode == "dynamic" or cfg.format != "auto" or cfg.fallback == "dynamic" \
        else ["qoperator", "qdq"]
    seen: dict[Int8Scheme, None] = {table_scheme: None}
    for fmt_ in formats:
        for activation, weight in types:
            for reduce_range in ranges:
                for channel in channels:
                    seen.setdefault(Int8Scheme(activation, weight, reduce_range, channel, fmt_), None)
    return list(seen)


@dataclass
class SchemeTrial:
    """One scheme's dev score and batch-1 speed."""

    scheme: Int8Scheme
    dev_accuracy: float
    dev_drop_points: float
    agreement: float  # with fp32's dev predictions
    p50_ms: float | None = None  # batch 1, interleaved with the other candidates

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme.name, **dataclasses.asdict(self.scheme),
                "dev_accuracy": self.dev_accuracy, "dev_drop_points": self.dev_drop_points,
                "agreement": self.agreement, "p50_ms_b1": self.p50_ms}


def choose_scheme(trials: list[SchemeTrial], tolerance: float) -> tuple[SchemeTrial, str]:
    """The fastest trial whose dev drop is within ``tolerance`` points, and why it won.

    Speeds within SPEED_TIE of the fastest tie, and the tie goes to the smaller drop, then
    the higher agreement. When no trial holds, the smallest drop is kept (ties again by
    speed) for the node fallback to repair.
    """
    holding = [t for t in trials if t.dev_drop_points <= tolerance]
    if holding:
        timed = [t for t in holding if t.p50_ms is not None]
        if not timed:
            best = min(holding, key=lambda t: (t.dev_drop_points, -t.agreement))
            return best, "smallest dev drop (untimed)"
        fastest = min(t.p50_ms for t in timed)
        near = [t for t in timed if t.p50_ms <= fastest * (1 + SPEED_TIE)]
        best = min(near, key=lambda t: (t.dev_drop_points, -t.agreement, t.p50_ms))
        return best, (f"fastest of {len(holding)} scheme(s) within {tolerance:g} dev points "
                      f"({best.p50_ms:.2f} ms at batch 1)")
    least = min(t.dev_drop_points for t in trials)
    close = [t for t in trials if t.dev_drop_points <= least + 1e-9]
    best = min(close, key=lambda t: (t.p50_ms if t.p50_ms is not None else float("inf"), -t.agreement))
    return best, (f"no scheme within {tolerance:g} dev points: the smallest drop ({least:.2f}), "
                  "handed to the node fallback")


def interleaved_batch_1(sessions: dict[str, Any], batch: dict[str, np.ndarray],
                        rounds: int) -> dict[str, float]:
    """p50 ms of each session on ``batch`` (one real example), in alternating rounds: on a
    shared machine a slow spell lands on every candidate alike."""
    from slimbert.bench.latency import interleaved_p50_ms

    runs: dict[str, Callable[[], object]] = {
        name: (lambda s=s: s.run({k: v for k, v in batch.items() if k in s.input_names}))
        for name, s in sessions.items()}
    return interleaved_p50_ms(runs, rounds=rounds, per_round=10, warmup=5)
