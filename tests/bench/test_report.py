import pytest

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


# -- the typed report ----------------------------------------------------------------------

def _json_report():
    """A report.json as bench writes it, plus a device row and a key this version does not know."""
    report = _report(_rows())
    report["labels"] = [0, 1]
    report["rows"][0]["latency"].append({"batch_size": 32, "p50_ms": 50.0})
    report["rows"].append({"artifact": "teacher", "target": "pi4:onnxruntime", "latency": [
        {"batch_size": 1, "p50_ms": 20.0}], "bundle_id": "abc", "platform": "Linux-aarch64"})
    report["from_the_future"] = {"x": 1}
    return report


def test_an_old_report_json_loads_and_writes_back_with_every_key(tmp_path):
    import json

    from slimbert.bench.report import BenchReport, load_report

    path = tmp_path / "report.json"
    path.write_text(json.dumps(_json_report()))
    report = load_report(path)
    assert [r.label for r in report.rows] == ["teacher on torch-cpu", "mobile on ort-mobile",
                                              "teacher on pi4:onnxruntime"]
    again = report.to_dict()
    for key, value in _json_report().items():  # nothing lost, nothing renamed
        if key != "rows":
            assert again[key] == value
    for old, new in zip(_json_report()["rows"], again["rows"], strict=True):
        assert {k: new[k] for k in old} == old
        assert new["fingerprint"] is None  # rows written before the content hash have none
    assert BenchReport.from_dict(again) == report


def test_p50_speedup_and_row_lookup():
    from slimbert.bench.report import BenchReport, BenchRow

    report = BenchReport.from_dict(_json_report())
    teacher, mobile, device = report.rows
    assert teacher.p50(1) == 5.0 and teacher.p50(32) == 50.0 and teacher.p50(8) is None
    assert device.speedup(teacher, 1) == 0.25 and device.speedup(teacher, 32) is None
    assert report.smallest_batch == 1 and report.reference_row is teacher
    assert report.speedup(device) == 0.25
    assert report.find("teacher") == [teacher, device] and report.row("teacher") is None
    assert report.row("teacher", "pi4:onnxruntime") is device and report.row("mobile") is mobile
    assert BenchRow("x", "t", latency=[{"batch_size": 1, "p50_ms": "fast"}]).p50(1) is None
    faster = BenchRow("teacher", "pi4:onnxruntime", latency=[{"batch_size": 1, "p50_ms": 2.5}])
    report.replace_rows([faster])
    assert report.rows[-1] is faster and len(report.rows) == 3 and report.speedup(faster) == 2.0


@pytest.mark.parametrize(("text", "fragment"), [
    ("{not json", "not valid JSON"), ("[1, 2]", "not a bench report"),
    ('{"rows": [], "config": [1]}', "'config' is not a mapping"), ('{"rows": [1]}', "rows are not mappings"),
])
def test_load_report_refuses_what_is_not_a_bench_report(tmp_path, text, fragment):
    from slimbert.bench.report import load_report
    from slimbert.errors import GateError

    (tmp_path / "r.json").write_text(text)
    with pytest.raises(GateError, match=fragment) as info:
        load_report(tmp_path / "r.json", GateError, "give a report")
    assert info.value.hint == "give a report"
