"""One interface for every way of running a model, so numbers are comparable.

Every benchmark and accuracy evaluation goes through ``Runtime.load(...).run(batch)``:
"ort-cpu" and "torch-cpu" rows are measured by the same harness on the same batches.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from slimbert.errors import RuntimeUnavailable

# the batch a served model answers in: one request, its own length, no padding
SERVED_BATCH = 1


class Session(ABC):
    """A loaded model ready to run batches."""

    input_names: tuple[str, ...]
    # True when an example's outputs depend on the other examples in its batch: dynamic INT8
    # computes one activation scale per input tensor, padding and neighbours included
    batch_dependent: bool = False

    @abstractmethod
    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Logits for a padded batch (int64 arrays keyed by input name)."""

    def predict(self, enc, batch_size: int = 64, desc: str | None = None,
                progress: bool = False) -> np.ndarray:
        """Logits for every example of an EncodedSplit, in its order."""
        from slimbert.data import iterate_batches
        from slimbert.progress import progress_bar

        out = None
        batches = iterate_batches(enc, batch_size)
        total = -(-len(enc) // batch_size)
        for index, batch in progress_bar(batches, enabled=progress, total=total, desc=desc, leave=False):
            logits = self.run({k: v for k, v in batch.items() if k in self.input_names})
            if out is None:
                out = np.zeros((len(enc), logits.shape[-1]), dtype=np.float32)
            out[index] = logits
        return out

    def served_logits(self, enc, batch_size: int = 64, desc: str | None = None,
                      progress: bool = False) -> np.ndarray:
        """Logits as a server answering one request at a time gets them.

        A batch-dependent session runs each example alone (batch 1, no padding), the shape
        the deploy runner serves; any other session gives the same logits batched, faster.
        """
        served = SERVED_BATCH if self.batch_dependent else batch_size
        return self.predict(enc, served, desc=desc, progress=progress)


class Runtime(ABC):
    """A named way to run one kind of artifact on one device."""

    name: str
    kind: str  # artifact kind it runs: "hf-model" or "onnx"
    device: str  # "cpu", "cuda", "mobile"
    description: str
    in_default: bool = True  # measured when a bench names no targets; False: only when asked
    # threads when the bench is not told (None: all cores); mobile targets pick a phone's
    default_threads: int | None = None

    def unavailable_reason(self) -> str | None:
        """None when usable here; otherwise why not and how to install it."""
        return None

    def check_available(self) -> None:
        reason = self.unavailable_reason()
        if reason:
            raise RuntimeUnavailable(f"runtime {self.name!r} is not available here: {reason}")

    @abstractmethod
    def load(self, artifact_dir: Path, threads: int | None = None) -> Session:
        """Load the model in ``artifact_dir``."""

    def load_alone(self, artifact_dir: Path, threads: int | None = None) -> Session:
        """Load for a caller that runs nothing else while it uses the session (the bench, one
        artifact at a time): a runtime may then keep its worker threads hot, as it would when
        serving alone. ``load`` must stay safe for sessions that take turns in one process."""
        return self.load(artifact_dir, threads)


_REGISTRY: dict[str, Runtime] = {}


def register(runtime: Runtime) -> Runtime:
    _REGISTRY[runtime.name] = runtime
    return runtime


def all_runtimes() -> dict[str, Runtime]:
    return dict(_REGISTRY)


def get_runtime(name: str) -> Runtime:
    try:
        runtime = _REGISTRY[name]
    except KeyError:
        raise RuntimeUnavailable(
            f"unknown runtime {name!r}; known: {', '.join(sorted(_REGISTRY))}.",
            hint="`slimbert bench --list-targets` lists them with their availability.",
        ) from None
    runtime.check_available()
    return runtime
