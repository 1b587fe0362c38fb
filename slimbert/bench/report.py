"""Bench results: the typed report (``BenchReport``/``BenchRow``), its JSON, a Markdown
table, an HTML page and a latency-vs-accuracy plot.

Every reader of a bench report (bench itself, the gate, deploy's device rows, the
benchmark scripts) goes through these types, so that "p50 at the smallest batch", the
speed-up over the reference and the lookup of a row by artifact and target exist once.
The JSON on disk is ``BenchReport.to_dict()``; keys this version does not know are kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from slimbert.errors import SlimbertError


@dataclass
class BenchRow:
    """One artifact measured on one target (runtime), as a row of the report."""

    artifact: str
    target: str
    path: str | None = None
    kind: str | None = None
    device: str | None = None
    threads: int | None = None
    accuracy: dict[str, Any] | None = None  # classification_metrics of the split; None: not measured
    latency: list[dict[str, Any]] = field(default_factory=list)  # LatencyStats per batch size
    seq_len_sweep: list[dict[str, Any]] = field(default_factory=list)
    size_mb: float | None = None
    predictions: list[int] | None = None  # per example, in split order: what the gate pairs
    # tasks scored against a reference row (embeddings): each metric per example, in split order
    example_scores: dict[str, list[float]] | None = None
    rss_delta_mb: float | None = None
    gpu_peak_mb: float | None = None
    setup_seconds: dict[str, float] | None = None  # graph-captured runtimes: capture time per bucket
    retention: float | None = None  # accuracy relative to the reference row
    speedup_b1: float | None = None  # p50 at the smallest batch size, the reference's over this one's
    # sha256 content fingerprint of the artifact's files (models.content_fingerprint): lets the gate
    # and deploy check that the model they see is the one measured here
    fingerprint: str | None = None
    recheck_p50_ms: float | None = None  # p50 at the smallest batch, timed again at the end of the bench
    timing_flag: str | None = None  # set when that re-timing disagrees: the latency is not trustworthy
    # 1 where the row's outputs depend on its batch (dynamic INT8): accuracy is then scored one
    # example at a time, as served, and batched_agreement says how often batching changes the label
    served_batch: int | None = None
    batched_agreement: float | None = None
    tuned_isa: str | None = None  # INT8 artifacts: the instruction set their scheme was measured on
    notes: list[str] = field(default_factory=list)  # what a reader must know (tolerance missed, CPU)
    extra: dict[str, Any] = field(default_factory=dict)  # other keys (a device row's bundle_id...)

    @property
    def label(self) -> str:
        return f"{self.artifact} on {self.target}"

    def latency_at(self, batch: int) -> dict[str, Any]:
        """The latency entry measured at ``batch`` ({} when that batch size was not timed)."""
        return next((s for s in self.latency if s.get("batch_size") == batch), {})

    def p50(self, batch: int) -> float | None:
        """Median latency in ms at ``batch``; None when not measured (or not a positive number)."""
        value = self.latency_at(batch).get("p50_ms")
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        return float(value) if ok else None

    def speedup(self, reference: BenchRow, batch: int) -> float | None:
        """How many times faster than ``reference`` at ``batch`` (p50 over p50); None if unknown."""
        own, ref = self.p50(batch), reference.p50(batch)
        return ref / own if ref and own else None

    def to_dict(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**row, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchRow:
        known = {f.name for f in fields(cls)} - {"extra"}
        row = cls(artifact=data.get("artifact"), target=data.get("target"),
                  **{k: v for k, v in data.items() if k in known - {"artifact", "target"}})
        row.extra = {k: v for k, v in data.items() if k not in known}
        return row


@dataclass
class BenchReport:
    """A bench run: its settings, data, machine, rows and the targets it could not run."""

    name: str = ""
    task: str = "text-classification"  # slimbert.tasks: what the rows' metrics are
    reference: str | None = None  # artifact whose row the relative columns compare to
    config: dict[str, Any] = field(default_factory=dict)  # the BenchConfig, as a mapping
    dataset: dict[str, Any] = field(default_factory=dict)  # source, fingerprint, split, examples
    labels: list[int] | None = None  # the split's labels, once for all rows (the gate pairs on them)
    environment: dict[str, Any] = field(default_factory=dict)
    rows: list[BenchRow] = field(default_factory=list)
    unavailable: list[dict[str, Any]] = field(default_factory=list)  # artifact, target, reason
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def smallest_batch(self) -> int:
        """The batch size the speed-up column compares at (1 in the default settings)."""
        return min(self.config.get("batch_sizes") or [1])

    def find(self, artifact: str | None = None, target: str | None = None) -> list[BenchRow]:
        """The rows of ``artifact`` on ``target``; None matches any."""
        return [r for r in self.rows if artifact in (None, r.artifact) and target in (None, r.target)]

    def row(self, artifact: str | None = None, target: str | None = None) -> BenchRow | None:
        """The one row of ``artifact`` on ``target``; None when there is none or more than one."""
        matches = self.find(artifact, target)
        return matches[0] if len(matches) == 1 else None

    @property
    def reference_row(self) -> BenchRow | None:
        return next((r for r in self.rows if r.artifact == self.reference), None)

    def speedup(self, row: BenchRow) -> float | None:
        """``row``'s speed-up over the reference row at the smallest batch size."""
        ref = self.reference_row
        return row.speedup(ref, self.smallest_batch) if ref is not None else None

    def replace_rows(self, rows: list[BenchRow]) -> None:
        """Add ``rows``; each replaces an old row of the same artifact and target."""
        keys = {(r.artifact, r.target) for r in rows}
        self.rows = [r for r in self.rows if (r.artifact, r.target) not in keys] + list(rows)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out["rows"] = [r.to_dict() for r in self.rows]
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchReport:
        known = {f.name for f in fields(cls)} - {"extra"}
        report = cls(**{k: v for k, v in data.items() if k in known - {"rows"}})
        report.rows = [BenchRow.from_dict(r) for r in data.get("rows") or []]
        report.extra = {k: v for k, v in data.items() if k not in known}
        return report


def as_report(report: BenchReport | dict[str, Any]) -> BenchReport:
    """``report`` as a BenchReport (the renderers and the gate also take the JSON's mapping)."""
    return report if isinstance(report, BenchReport) else BenchReport.from_dict(report)


def as_row(row: BenchRow | dict[str, Any]) -> BenchRow:
    return row if isinstance(row, BenchRow) else BenchRow.from_dict(row)


def load_report(path: Path, error: type[SlimbertError] = SlimbertError,
                hint: str = "give the report.json a bench stage writes (<run folder>/report.json).",
                required: tuple[str, ...] = ("rows",)) -> BenchReport:
    """The bench report at ``path``, or ``error`` (the caller's SlimbertError) saying what is wrong.

    ``required`` are the keys the caller cannot do without (the gate: the dataset; deploy:
    the config); a mapping-valued one that is not a mapping is refused too.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read bench report {path}: {exc}", hint=hint) from exc
    except json.JSONDecodeError as exc:
        raise error(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg}).", hint=hint) from exc
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or any(
            key not in data for key in required):
        raise error(f"{path} is not a bench report: it lacks {' and '.join(map(repr, required))}.",
                    hint=hint)
    for key in ("config", "dataset", "environment"):
        if key in data and not isinstance(data[key], dict):
            raise error(f"{path} is not a bench report: its {key!r} is not a mapping.", hint=hint)
    if not all(isinstance(r, dict) for r in data["rows"]):
        raise error(f"{path} is not a bench report: its rows are not mappings.", hint=hint)
    return BenchReport.from_dict(data)


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


# the metric columns of a classification report: (key in row.accuracy, title, format)
CLASSIFICATION_COLUMNS = (("accuracy", "accuracy", ".2%"), ("macro_f1", "macro-F1", ".4f"))


def metric_columns(task: str) -> tuple[tuple[str, str, str], ...]:
    """(key, title, format) of the report's metric columns: the task's own metrics."""
    from slimbert.tasks import METRIC_TITLES, get_task

    if get_task(task).load().outputs_are_labels:
        return CLASSIFICATION_COLUMNS
    return tuple((m, METRIC_TITLES.get(m, m), ".4f") for m in get_task(task).metrics if m != "spearman")


def markdown_table(rows: list[BenchRow] | list[dict[str, Any]], batch_sizes: list[int], seq_len: int,
                   columns: tuple[tuple[str, str, str], ...] = CLASSIFICATION_COLUMNS) -> str:
    head = ["artifact", "target", *(title for _, title, _ in columns), "vs ref"]
    for b in batch_sizes:
        head += [f"p50 ms b{b}", f"p90 ms b{b}", f"p99 ms b{b}"]
    head += [f"throughput/s b{max(batch_sizes)}", "threads", "size MB", "speed-up b1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in map(as_row, rows):
        acc = row.accuracy or {}
        cells = [row.artifact, row.target, *(_fmt(acc.get(key), spec) for key, _, spec in columns),
                 _fmt(row.retention, ".2%")]
        for b in batch_sizes:
            cells += [_fmt(row.latency_at(b).get(key), ".2f") for key in ("p50_ms", "p90_ms", "p99_ms")]
        cells += [_fmt(row.latency_at(max(batch_sizes)).get("throughput"), ".0f"), _fmt(row.threads, ""),
                  _fmt(row.size_mb, ".1f"), _fmt(row.speedup_b1, ".2f") + "x" if row.speedup_b1 else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    what = "accuracy" if columns == CLASSIFICATION_COLUMNS else f"{columns[0][1]} (against the reference row)"
    lines.append(f"Latency on full-length inputs of {seq_len} tokens; {what} on the real "
                 f"evaluation split through the same runtime; 'vs ref' is {columns[0][1]} relative to "
                 "the reference row; speed-up is p50 at batch 1 relative to it. Mobile targets "
                 "run on this CPU with a phone's thread count: their latency is not a phone's.")
    return "\n".join(lines)


def render_markdown(report: BenchReport | dict[str, Any]) -> str:
    report = as_report(report)
    cfg, env, dataset = report.config, report.environment, report.dataset
    out = [f"# slimbert benchmark: {report.name}", "",
           f"Dataset {dataset['source']!s}, split `{cfg['split']}` "
           f"({dataset['examples']} examples). Machine: {env['cpu']}, "
           f"{env['threads']} threads. Reference row: `{report.reference}`.", "",
           markdown_table(report.rows, cfg["batch_sizes"], cfg["seq_len"], metric_columns(report.task))]
    sweep_rows = [r for r in report.rows if r.seq_len_sweep]
    if sweep_rows:
        lengths = [s["seq_len"] for s in sweep_rows[0].seq_len_sweep]
        batch = sweep_rows[0].seq_len_sweep[0]["batch_size"]
        out += ["", f"Throughput (sequences/s) and p50 ms over sequence lengths, batch {batch}:", "",
                "| artifact | target | " + " | ".join(f"len {n}" for n in lengths) + " |",
                "|---|---|" + "---|" * len(lengths)]
        for row in sweep_rows:
            cells = [f"{s['throughput']:.0f}/s, {s['p50_ms']:.1f} ms" for s in row.seq_len_sweep]
            out.append(f"| {row.artifact} | {row.target} | " + " | ".join(cells) + " |")
    served = [r for r in report.rows if r.served_batch]
    if served:
        out += ["", "Scored as served, one example at a time (their activation scales depend on the "
                "batch):", ""]
        batch = cfg.get("eval_batch_size", 64)
        labels = report.task == "text-classification"
        agree = "gives the same label for {} of the examples" if labels else "has a mean cosine of {} with it"
        out += [f"- `{r.artifact}` on `{r.target}`: batched inference (batch {batch}) "
                + agree.format(_fmt(r.batched_agreement, ".2%" if labels else ".4f")) for r in served]
    noted = [r for r in report.rows if r.notes]
    if noted:
        out += ["", "Notes:", ""]
        out += [f"- `{r.artifact}` on `{r.target}`: {note}" for r in noted for note in r.notes]
    flagged = [r for r in report.rows if r.timing_flag]
    if flagged:
        out += ["", "Latencies not to be trusted as measured:", ""]
        out += [f"- `{r.artifact}` on `{r.target}`: {r.timing_flag}" for r in flagged]
    if report.unavailable:
        out += ["", "Targets not measured here:", ""]
        out += [f"- `{t['artifact']}` on `{t['target']}`: {t['reason']}" for t in report.unavailable]
    return "\n".join(out) + "\n"


def pareto_plot(rows: list[BenchRow] | list[dict[str, Any]], path: Path, batch_size: int = 1,
                metric: str = "accuracy") -> Path | None:
    """Latency (x, log) against the task's metric (y), one point per artifact/target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = []
    for row in map(as_row, rows):
        p50 = row.p50(batch_size)
        if p50 is not None and row.accuracy and metric in row.accuracy:
            points.append((p50, row.accuracy[metric] * 100, f"{row.artifact} ({row.target})"))
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for x, y, label in points:
        ax.scatter(x, y, s=40)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"p50 latency, batch {batch_size} (ms, log scale)")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title("Latency vs accuracy: lower-right is worse, upper-left is better")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _markdown_table_to_html(markdown: str) -> str:
    """The report's Markdown tables and paragraphs as plain HTML (no Markdown library needed)."""
    import html

    out, rows = [], []

    def flush() -> None:
        if rows:
            cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
            head, body = cells[0], [c for c in cells[1:] if not set("".join(c)) <= set("-: ")]
            out.append("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head)
                       + "</tr></thead><tbody>" + "".join(
                           "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
                       + "</tbody></table>")
            rows.clear()

    in_list = False
    for line in markdown.splitlines():
        if line.startswith("|"):
            rows.append(line)
            continue
        flush()
        if in_list and not line.startswith("- "):
            out.append("</ul>")
            in_list = False
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    if in_list:
        out.append("</ul>")
    return "\n".join(out)


def render_html(report: BenchReport | dict[str, Any], plot: Path | None = None) -> str:
    """One self-contained HTML page: the Markdown report's content and the plot inlined as base64."""
    import base64
    import html

    report = as_report(report)
    body = _markdown_table_to_html(render_markdown(report))
    if plot is not None and Path(plot).is_file():
        data = base64.b64encode(Path(plot).read_bytes()).decode("ascii")
        body += f'\n<h2>Latency vs accuracy</h2>\n<img alt="pareto plot" src="data:image/png;base64,{data}">'
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}"
             "table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.3em .6em;"
             "text-align:right}td:first-child,td:nth-child(2),th{text-align:left}img{max-width:100%}")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(report.name)}"
            f"</title><style>{style}</style></head><body>\n{body}\n</body></html>\n")
