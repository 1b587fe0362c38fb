"""The settings of the quantization stages: quantize-onnx, quantize-torch and qat.

Only dataclasses and the instruction-set table they validate against: no torch, onnx,
onnxruntime or transformers at import time, so parsing a recipe and planning a run stay
light. Field names and defaults are part of every stage's hash: renaming one reruns stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from slimbert.compress.config import KDConfig
from slimbert.hw import ISA_NAMES, Int8Formats, int8_formats

CalibrationName = Literal["minmax", "entropy", "percentile", "distribution"]
# the largest dev-accuracy drop, in points, a quantize stage accepts when its recipe sets none
DEFAULT_TOLERANCE = 1.0
# the modes each quantize-torch backend supports (the backends themselves: torch_ptq.BACKENDS)
BACKEND_MODES: dict[str, tuple[str, ...]] = {"torchao-x86": ("static", "dynamic"), "inc": ("static",)}


@dataclass
class OnnxQuantizeConfig:
    """How to quantize. ``auto`` types follow the CPU's instruction set (see slimbert/hw.py).

    INT8 schemes are chosen by measurement (``schemes: measure``, quantize/schemes.py): what
    the recipe leaves open (``auto`` types, ``reduce_range``/``per_channel`` unset, ``format:
    auto``) is tried both ways on dev, and the fastest scheme within ``tolerance`` wins; the
    instruction-set table only orders the tries. ``schemes: table`` takes the table's alone.

    mode: dynamic (weights offline, activations per batch at run time: no calibration),
    static (activations calibrated on training examples; fastest on CPU), fp8 (E4M3/E5M2
    QDQ for GPUs with FP8 tensor cores; ONNX Runtime runs it on CPU, emulated, to check
    accuracy).
    """

    mode: Literal["dynamic", "static", "fp8"] = "dynamic"
    format: Literal["auto", "qoperator", "qdq"] = "auto"  # static INT8 only; auto: measured
    # ORT's static quantizer has no rule for the fused Attention op, which holds a quarter of
    # an encoder layer's matmul work; "dynamic" quantizes it in a second pass (QAttention)
    attention: Literal["dynamic", "fp32"] = "dynamic"
    # ORT's own names (qint8, quint8) are accepted too: recipes written for ORT keep working
    activation_type: Literal["auto", "uint8", "int8", "quint8", "qint8"] = "auto"
    weight_type: Literal["auto", "uint8", "int8", "quint8", "qint8"] = "auto"
    reduce_range: bool | None = None  # 7-bit weights; None: from the instruction set
    target_isa: str = "auto"  # which CPU to choose INT8 types for; auto: this one
    per_channel: bool | None = None  # INT8 weights; None: measured (FP8: fp8_per_channel)
    activation_symmetric: bool = False
    calibration: CalibrationName = "minmax"
    calibration_examples: int = 512
    calibration_batch_size: int = 32
    percentile: float = 99.999
    fp8_format: Literal["e4m3fn", "e5m2"] = "e4m3fn"
    fp8_per_channel: bool = True
    op_types: list[str] | None = None  # None: every op type the method quantizes
    exclude_nodes: list[str] | None = None
    exclude_op_types: list[str] | None = None
    # max dev-accuracy drop in points: schemes that lose more are not kept, then sensitive
    # nodes fall back until it holds; the summary and report say so when nothing holds
    tolerance: float = DEFAULT_TOLERANCE
    schemes: Literal["measure", "table"] = "measure"
    scheme_timing_rounds: int = 8  # interleaved batch-1 timing rounds per candidate scheme
    # what a sensitive node falls back to: "dynamic" INT8 (scales per run follow the outliers
    # that a calibrated range clips, at INT8 speed; ORT CPU only, so QOperator only), "fp32",
    # or "auto": dynamic for static QOperator, fp32 otherwise (Q/DQ graphs are TensorRT's input)
    fallback: Literal["auto", "dynamic", "fp32"] = "auto"
    max_fallback_nodes: int = 12
    # ONNX Runtime fuses each residual Add + LayerNormalization into SkipLayerNormalization at
    # load; in INT8 QOperator graphs on x86 CPUs the fused kernel is slower (median 1.16x, up
    # to 1.87x: docs/quantize.md). false writes the INT8 file so that no loader fuses them
    # (its dynamic dims unnamed); true leaves the file as ORT would fuse it
    skip_layernorm_fusion: bool = False

    def __post_init__(self) -> None:
        aliases = {"qint8": "int8", "quint8": "uint8"}
        self.activation_type = aliases.get(self.activation_type, self.activation_type)
        self.weight_type = aliases.get(self.weight_type, self.weight_type)
        if self.target_isa != "auto" and self.target_isa not in ISA_NAMES:
            raise ValueError(f"target_isa must be auto or one of {', '.join(ISA_NAMES)}, "
                             f"got {self.target_isa!r}")
        if self.calibration_examples < 1 or self.calibration_batch_size < 1:
            raise ValueError("calibration_examples and calibration_batch_size must be >= 1")
        if not 90 < self.percentile < 100:
            raise ValueError(f"percentile must be in (90, 100), got {self.percentile}")
        if self.tolerance is None or self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0 points, got {self.tolerance}")
        if self.scheme_timing_rounds < 1:
            raise ValueError("scheme_timing_rounds must be >= 1")
        if self.mode == "fp8" and self.calibration not in ("minmax", "percentile"):
            raise ValueError("fp8 scales come from a calibrated range: calibration must be "
                             f"minmax or percentile, got {self.calibration!r}")
        if self.max_fallback_nodes < 1:
            raise ValueError("max_fallback_nodes must be >= 1")
        if self.fallback == "dynamic" and (self.mode != "static" or self.format == "qdq"):
            raise ValueError("fallback: dynamic needs mode: static and format: qoperator (dynamic INT8 "
                             "nodes run on ONNX Runtime's CPU kernels, not in Q/DQ graphs)")

    def resolved(self) -> OnnxQuantizeConfig:
        """This config with what the scheme search leaves open set to the table's scheme:
        format auto -> qoperator, per_channel unset -> per tensor."""
        import dataclasses

        return dataclasses.replace(self, format="qoperator" if self.format == "auto" else self.format,
                                   per_channel=bool(self.per_channel))

    def fallback_precision(self) -> str:
        """What the repair's sensitive nodes become: "dynamic" or "fp32"."""
        if self.fallback != "auto":
            return self.fallback
        return "dynamic" if self.mode == "static" and self.format != "qdq" else "fp32"

    def int8_formats(self) -> Int8Formats:
        """The INT8 types after resolving ``auto`` against the target instruction set."""
        chosen = int8_formats(None if self.target_isa == "auto" else self.target_isa)
        activation = chosen.activation_type if self.activation_type == "auto" else self.activation_type
        weight = chosen.weight_type if self.weight_type == "auto" else self.weight_type
        reduce = chosen.reduce_range if self.reduce_range is None else self.reduce_range
        if (activation, weight, reduce) == (chosen.activation_type, chosen.weight_type, chosen.reduce_range):
            return chosen
        return Int8Formats(chosen.isa, activation, weight, reduce, "set in the recipe")


@dataclass
class TorchQuantizeConfig:
    """How to quantize on the PyTorch side; the result is a ``model.pt2`` PT2E program.

    backend: torchao-x86 (X86InductorQuantizer; static or dynamic) or inc (Neural Compressor
    autotune, static only: its dynamic PT2E config loses too much accuracy). ``calibration``,
    ``reduce_range`` and ``target_isa`` set torchao-x86's quantizer; INC tunes its own.
    tolerance: largest dev-accuracy drop in points (quantize-onnx's meaning and default).
    torchao-x86 keeps the most sensitive Linear layers fp32 until it holds; inc autotunes
    against it.
    """

    backend: Literal["torchao-x86", "inc"] = "torchao-x86"
    mode: Literal["static", "dynamic"] = "static"
    # static activation observer: histogram (X86InductorQuantizer's default: the range that
    # minimises the quantization error) or minmax (the observed extremes)
    calibration: Literal["histogram", "minmax"] = "histogram"
    # 7-bit activations, for x86 CPUs without VNNI (u8 x s8 products saturate); None: this CPU's
    reduce_range: bool | None = None
    target_isa: str = "auto"  # which CPU reduce_range is chosen for; auto: this one
    calibration_examples: int = 512
    calibration_batch_size: int = 32
    tolerance: float = DEFAULT_TOLERANCE
    # torchao-x86 with reduce_range unset: 7- and 8-bit activations both tried on dev, the
    # better kept (the same oneDNN kernels run both: no speed to weigh); table: the ISA's rule
    schemes: Literal["measure", "table"] = "measure"
    max_fallback_layers: int = 12
    max_seq_len: int | None = None  # longest sequence the program takes; None: the model's positions

    def __post_init__(self) -> None:
        modes = BACKEND_MODES.get(self.backend)
        if modes is not None and self.mode not in modes:
            raise ValueError(f"backend {self.backend} supports mode {', '.join(modes)}, "
                             f"not {self.mode!r}")
        if self.target_isa != "auto" and self.target_isa not in ISA_NAMES:
            raise ValueError(f"target_isa must be auto or one of {', '.join(ISA_NAMES)}, "
                             f"got {self.target_isa!r}")
        if self.calibration_examples < 1 or self.calibration_batch_size < 1:
            raise ValueError("calibration_examples and calibration_batch_size must be >= 1")
        if self.tolerance is None or self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0 points, got {self.tolerance}")
        if self.max_fallback_layers < 1:
            raise ValueError("max_fallback_layers must be >= 1")
        if self.max_seq_len is not None and self.max_seq_len < 4:
            raise ValueError(f"max_seq_len must be >= 4, got {self.max_seq_len}")

    def activation_reduce_range_isa(self) -> str:
        """The instruction set the activation bits are chosen for."""
        return int8_formats(None if self.target_isa == "auto" else self.target_isa).isa

    def activation_reduce_range(self) -> tuple[bool, str]:
        """Whether activations use 7 bits, and why (the CPU's instruction set, or the recipe)."""
        formats = int8_formats(None if self.target_isa == "auto" else self.target_isa)
        if self.reduce_range is not None:
            return self.reduce_range, "set in the recipe"
        return formats.reduce_range, f"{formats.isa}: {formats.why}"


@dataclass
class QatConfig(KDConfig):
    """Short, gentle fine-tuning: the model is already trained, only rounding is new.

    The teacher is the fp32 model itself; hidden-state and attention losses pair its layers
    one to one with the fake-quantized copy's.
    """

    epochs: int = 2
    lr: float = 2e-5
    calibration_batches: int = 16
    opset: int = 17
    atol: float = 1e-2  # ONNX vs fake-quantized PyTorch: roundings may land one step apart

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.calibration_batches < 1:
            raise ValueError("calibration_batches must be >= 1")
