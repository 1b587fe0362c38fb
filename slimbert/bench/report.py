"""Bench results as JSON, a Markdown table and a latency-vs-accuracy plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slimbert.errors import SlimbertError


def read_report(path: Path, error: type[SlimbertError], hint: str,
                required: tuple[str, ...] = ("rows",)) -> dict[str, Any]:
    """A bench report.json, or ``error`` (the caller's SlimbertError) saying what is wrong."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read bench report {path}: {exc}", hint=hint) from exc
    except json.JSONDecodeError as exc:
        raise error(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg}).", hint=hint) from exc
    if not isinstance(report, dict) or not isinstance(report.get("rows"), list) or any(
            key not in report for key in required):
        raise error(f"{path} is not a bench report: it lacks {' and '.join(map(repr, required))}.",
                    hint=hint)
    return report


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def markdown_table(rows: list[dict[str, Any]], batch_sizes: list[int], seq_len: int) -> str:
    head = ["artifact", "target", "accuracy", "macro-F1", "vs ref"]
    for b in batch_sizes:
        head += [f"p50 ms b{b}", f"p90 ms b{b}", f"p99 ms b{b}"]
    head += [f"throughput/s b{max(batch_sizes)}", "threads", "size MB", "speed-up b1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        acc = row.get("accuracy") or {}
        cells = [row["artifact"], row["target"], _fmt(acc.get("accuracy"), ".2%"),
                 _fmt(acc.get("macro_f1"), ".4f"), _fmt(row.get("retention"), ".2%")]
        lat = {s["batch_size"]: s for s in row.get("latency", [])}
        for b in batch_sizes:
            cells += [_fmt(lat.get(b, {}).get(key), ".2f") for key in ("p50_ms", "p90_ms", "p99_ms")]
        cells += [_fmt(lat.get(max(batch_sizes), {}).get("throughput"), ".0f"), _fmt(row.get("threads"), ""),
                  _fmt(row.get("size_mb"), ".1f"), _fmt(row.get("speedup_b1"), ".2f") + "x"
                  if row.get("speedup_b1") else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Latency on full-length inputs of {seq_len} tokens; accuracy on the real "
                 "evaluation split through the same runtime; 'vs ref' is accuracy relative to "
                 "the reference row; speed-up is p50 at batch 1 relative to it. Mobile targets "
                 "run on this CPU with a phone's thread count: their latency is not a phone's.")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    env = report["environment"]
    out = [f"# slimbert benchmark: {report['name']}", "",
           f"Dataset {report['dataset']['source']!s}, split `{cfg['split']}` "
           f"({report['dataset']['examples']} examples). Machine: {env['cpu']}, "
           f"{env['threads']} threads. Reference row: `{report['reference']}`.", "",
           markdown_table(report["rows"], cfg["batch_sizes"], cfg["seq_len"])]
    sweep_rows = [r for r in report["rows"] if r.get("seq_len_sweep")]
    if sweep_rows:
        lengths = [s["seq_len"] for s in sweep_rows[0]["seq_len_sweep"]]
        batch = sweep_rows[0]["seq_len_sweep"][0]["batch_size"]
        out += ["", f"Throughput (sequences/s) and p50 ms over sequence lengths, batch {batch}:", "",
                "| artifact | target | " + " | ".join(f"len {n}" for n in lengths) + " |",
                "|---|---|" + "---|" * len(lengths)]
        for row in sweep_rows:
            cells = [f"{s['throughput']:.0f}/s, {s['p50_ms']:.1f} ms" for s in row["seq_len_sweep"]]
            out.append(f"| {row['artifact']} | {row['target']} | " + " | ".join(cells) + " |")
    if report.get("unavailable"):
        out += ["", "Targets not measured here:", ""]
        out += [f"- `{t['artifact']}` on `{t['target']}`: {t['reason']}" for t in report["unavailable"]]
    return "\n".join(out) + "\n"


def pareto_plot(rows: list[dict[str, Any]], path: Path, batch_size: int = 1) -> Path | None:
    """Latency (x, log) against accuracy (y), one point per artifact/target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = []
    for row in rows:
        lat = {s["batch_size"]: s for s in row.get("latency", [])}
        if batch_size in lat and row.get("accuracy"):
            points.append((lat[batch_size]["p50_ms"], row["accuracy"]["accuracy"] * 100,
                           f"{row['artifact']} ({row['target']})"))
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for x, y, label in points:
        ax.scatter(x, y, s=40)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"p50 latency, batch {batch_size} (ms, log scale)")
    ax.set_ylabel("accuracy (%)")
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


def render_html(report: dict[str, Any], plot: Path | None = None) -> str:
    """One self-contained HTML page: the Markdown report's content and the plot inlined as base64."""
    import base64
    import html

    body = _markdown_table_to_html(render_markdown(report))
    if plot is not None and Path(plot).is_file():
        data = base64.b64encode(Path(plot).read_bytes()).decode("ascii")
        body += f'\n<h2>Latency vs accuracy</h2>\n<img alt="pareto plot" src="data:image/png;base64,{data}">'
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}"
             "table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.3em .6em;"
             "text-align:right}td:first-child,td:nth-child(2),th{text-align:left}img{max-width:100%}")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(report['name'])}"
            f"</title><style>{style}</style></head><body>\n{body}\n</body></html>\n")
