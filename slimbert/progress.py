"""Progress bars that suit both a terminal and a CI log.

On a terminal tqdm redraws in place; in a log file every redraw is another line, so when
stderr is not a terminal the bars update at most every 30 seconds.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from tqdm.auto import tqdm


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    interactive = sys.stderr.isatty()
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 0.1 if interactive else 30.0)
    return tqdm(iterable, disable=not enabled, **kwargs)


@contextlib.contextmanager
def quiet_logger(name: str = "", level: int = logging.ERROR) -> Iterator[None]:
    """Raise logger ``name`` (the root logger by default) to ``level`` for the block.

    For libraries that log routine chatter at INFO/WARNING on every call (ORT's quantizer
    asks for pre-processing, INC prints each tuning trial as a table).
    """
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)
