from slimbert.bench.report import markdown_table, pareto_plot, render_html


def _report(rows):
    return {"name": "t<1>", "reference": "teacher", "dataset": {"source": "x.csv", "examples": 10},
            "config": {"split": "test", "batch_sizes": [1], "seq_len": 128},
            "environment": {"cpu": "box", "threads": 2}, "rows": rows,
            "unavailable": [{"artifact": "s", "target": "ort-cuda", "reason": "no GPU"}]}


def _rows():
    return [{"artifact": name, "target": target, "threads": threads,
             "accuracy": {"accuracy": 0.9, "macro_f1": 0.9}, "retention": 1.0, "size_mb": 10.0,
             "speedup_b1": 1.0, "latency": [{"batch_size": 1, "p50_ms": 5.0, "p90_ms": 6.0, "p99_ms": 9.5,
                                            "throughput": 200.0}]}
            for name, target, threads in (("teacher", "torch-cpu", 2), ("mobile", "ort-mobile", 4))]


def test_table_has_p99_and_threads():
    table = markdown_table(_rows(), [1], 128)
    assert "p99 ms b1" in table and "| threads |" in table
    assert "| 5.00 | 6.00 | 9.50 | 200 | 4 |" in table


def test_html_report_is_self_contained(tmp_path):
    plot = pareto_plot(_rows(), tmp_path / "p.png")
    page = render_html(_report(_rows()), plot)
    assert page.startswith("<!doctype html>") and "<title>t&lt;1&gt;</title>" in page
    assert "<th>p99 ms b1</th>" in page and "<td>ort-mobile</td>" in page
    assert 'src="data:image/png;base64,iVBOR' in page  # the PNG inlined, no file reference
    assert "<ul>\n<li>`s` on `ort-cuda`: no GPU</li>\n</ul>" in page
    assert "|" not in page.split("<table>")[1].split("</table>")[0]
    assert "data:image" not in render_html(_report(_rows()), None)
