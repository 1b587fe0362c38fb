"""Process-wide settings a command line (or a long-running script) wants around slimbert.

`slimbert` calls both; a script driving the Python API may too: logging at the levels the
CLI uses, and SIGTERM (`kill`, a CI timeout, a scheduler) handled as Ctrl-C is, so that
half-written artifacts are removed and the last training checkpoint is kept for the rerun.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any


def setup_logging(verbosity: int) -> None:
    """slimbert's own loggers at INFO (1: DEBUG, -1: WARNING); libraries only say errors unless 2."""
    log = logging.getLogger("slimbert")
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=logging.DEBUG if verbosity > 1 else logging.ERROR,
                        format="%(levelname).1s %(name)s: %(message)s", stream=sys.stderr, force=True)
    log.setLevel(level)
    if verbosity < 2:  # torch's own handler prints torchao's import-time deprecation notices
        logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from slimbert import distributed

    if distributed.launched() and not distributed.is_main():  # one voice per launch: the main one's
        log.setLevel(logging.WARNING)
    import warnings

    if verbosity < 2:
        warnings.filterwarnings("ignore")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def exit_codes(ctx: Any) -> Iterator[None]:
    """A command's outcome as an exit code (``ctx``: the click context).

    2 (or the error's own code, 1 for a failed gate or health check): a SlimbertError, printed
    as one paragraph without a traceback; 130: interrupted (finished stages are kept); 3: any
    other exception, which is a bug: its traceback is printed. CI can tell them apart.
    """
    import click

    from slimbert.errors import SlimbertError

    try:
        yield
    except SlimbertError as exc:
        click.secho(f"error: {exc.message}", fg="red", err=True)
        if exc.hint:
            click.echo(f"  fix: {exc.hint}", err=True)
        ctx.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted: finished stages are kept; rerun the same command to "
                   "resume from the last checkpoint.", err=True)
        ctx.exit(130)
    except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise
    except Exception:
        import traceback

        traceback.print_exc()
        click.secho("internal error: this is a bug in slimbert, not a problem with your input; "
                    "please report it with the traceback above.", fg="red", err=True)
        ctx.exit(3)
