"""Where this process stands in a multi-process launch (``accelerate launch``, ``torchrun``).

A launcher starts N copies of the same command. Training runs on all of them (DDP);
every file that ends up in a run folder is written by the main process alone, and the
others wait at a barrier before they read it. The answers come from accelerate's
``PartialState``, a process-wide singleton that accelerate owns, so slimbert keeps no
distributed state of its own. In a plain process every helper is trivial: rank 0 of 1,
barriers return at once, a broadcast hands back its argument.

accelerate is imported inside the functions: the CLI's start-up stays light.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accelerate import PartialState

# Ranks other than the main one wait at barriers while the main one exports, quantizes or
# benchmarks; torch's default of 30 minutes would kill a run whose bench takes longer.
TIMEOUT = timedelta(hours=12)


def launched() -> bool:
    """True under a multi-process launcher; decided from its environment, without accelerate."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def use_cpu() -> bool:
    """Train on CPU when asked (``ACCELERATE_USE_CPU``, ``accelerate launch --cpu``) or when there is no GPU.

    accelerate itself only picks the gloo backend for a launched CPU run when told ``cpu=True``;
    without it, N ranks on a machine without CUDA would each train alone.
    """
    import torch
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()


def state() -> PartialState:
    """accelerate's process state; the first call joins the process group of a launch."""
    from accelerate import PartialState

    return PartialState(cpu=use_cpu(), timeout=TIMEOUT)


def world_size() -> int:
    return state().num_processes


def rank() -> int:
    return state().process_index


def is_main() -> bool:
    return state().is_main_process


def barrier() -> None:
    """Wait until every process gets here (no-op in a plain process)."""
    state().wait_for_everyone()


@contextmanager
def main_first() -> Iterator[None]:
    """Run the block on the main process first, then on the others (e.g. fetch, then read a cache)."""
    with state().main_process_first():
        yield


def broadcast(obj: Any) -> Any:
    """The main process's ``obj``, on every process (e.g. one early-stopping verdict for all)."""
    from accelerate.utils import broadcast_object_list

    if world_size() == 1:
        return obj
    return broadcast_object_list([obj])[0]


def gather(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process."""
    from accelerate.utils import gather_object

    if world_size() == 1:
        return [obj]
    return gather_object([obj])
