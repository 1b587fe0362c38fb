"""The command line's option types and shared options: parsing only, no decisions.

Values arrive in the library's terms (recipe keys, lists of ints); a settings error from
the library is renamed here to the option the user typed (``--set epochs``, ``--max-length``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import click


class IntList(click.ParamType):
    """A comma-separated list of integers, e.g. 1,32."""

    name = "N,N,..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            numbers = [int(part) for part in str(value).split(",")]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers, e.g. 1,32.", param, ctx)
        if min(numbers) < 1:
            self.fail(f"{value!r} has a number below 1.", param, ctx)
        return numbers


def parse_sets(pairs: tuple[str, ...]) -> dict[str, Any]:
    from slimbert.schema import load_yaml

    settings = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--set")
        key, value = pair.split("=", 1)
        settings[key.strip()] = load_yaml(value)
    return settings


# dataset option -> its key in a recipe's `dataset:` (--seed: the recipe's seed) and its settings
DATASET_OPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "--dataset": ("source", {"default": "rt-snippets",
                             "show_default": "rt-snippets, or the one recorded with a slimbert model",
                             "help": "Built-in name, a .csv/.tsv/.jsonl/.parquet file, or a hub dataset id. "
                             "Without it, a model made by slimbert is evaluated on the dataset and split "
                             "recorded in its manifest.json (never on its own training sentences)."}),
    "--text-column": ("text", {"default": "text", "show_default": True}),
    "--text-pair-column": ("text_pair", {"default": None, "help": "Second text column for pair tasks."}),
    "--label-column": ("label", {"default": "label", "show_default": True}),
    "--max-length": ("max_length", {"type": click.IntRange(min=8), "default": 128, "show_default": True,
                                    "help": "Tokens per example."}),
    "--seed": ("seed", {"default": 0, "show_default": True}),
}


def dataset_options(fn):
    for flag, (key, settings) in reversed(DATASET_OPTIONS.items()):
        fn = click.option(flag, f"dataset_{key}", **settings)(fn)
    return fn


def given_dataset(kw: dict) -> tuple[dict[str, Any], int | None]:
    """The dataset options given on the command line (as recipe keys) and --seed if given: the
    library fills in the rest, from the model's manifest when slimbert made it."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    values = {key: kw.pop(f"dataset_{key}") for key, _ in DATASET_OPTIONS.values()}  # the rest: settings
    given = {key: value for key, value in values.items()
             if ctx.get_parameter_source(f"dataset_{key}") != ParameterSource.DEFAULT}
    return given, given.pop("seed", None)


def option_name(path: str) -> str:
    """A recipe key path as the command line spells it: --set epochs, --max-length."""
    if path.startswith("stages["):
        key = path.partition(").")[2]
        return f"--set {key}" if key else "the --set options"
    flags = {key if key == "seed" else f"dataset.{key}": flag for flag, (key, _) in DATASET_OPTIONS.items()}
    return flags.get(path, path)


@contextlib.contextmanager
def options_named() -> Iterator[None]:
    """Settings errors name the option (--set epochs), not the recipe path the options became."""
    from slimbert.schema import SchemaError

    try:
        yield
    except SchemaError as exc:
        raise exc.renamed(option_name, "command-line options") from None


class StageChoice(click.Choice):
    """The stage types compress runs, read from the registry when first needed."""

    def __init__(self) -> None:
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:
        from slimbert.adhoc import compress_stages

        return tuple(compress_stages())


def float_or_none(ctx: click.Context, param: click.Parameter, value: Any) -> float | None:
    """Lets `--max-drop none` switch off a threshold that has a default."""
    if value is None or str(value).lower() in ("none", "off"):
        return None
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a number nor 'none'") from None
