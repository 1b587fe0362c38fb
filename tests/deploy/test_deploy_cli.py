"""`slimbert deploy` end to end against the test sshd: what it prints, exit codes, no tracebacks."""

import json

import pytest
import yaml
from click.testing import CliRunner

from slimbert.cli import main
from tests.deploy.conftest import DEVICE, faulty_python, free_port, variant, write_devices
from tests.deploy.test_remote_bench import local_report


def invoke(*args):
    return CliRunner().invoke(main, ["-q", "deploy", *map(str, args)])


def assert_usage_error(result, fragment):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and fragment in result.output, result.output


def test_deploy_status_rollback(onnx_artifact, other_artifact, device_file):
    first = invoke(onnx_artifact, "--device", DEVICE, "--devices", device_file)
    assert first.exit_code == 0, first.output
    assert "installed on local (root@127.0.0.1:" in first.output and "previous: none" in first.output
    first_id = first.output.split()[1].rstrip(":")  # "bundle <id>: tiny-onnx ..."
    assert len(first_id) == 16 and "labels: neg, pos" in first.output

    second = invoke(other_artifact, "--device", DEVICE, "--devices", device_file)
    assert second.exit_code == 0, second.output
    second_id = second.output.split()[1].rstrip(":")
    assert f"previous: {first_id}" in second.output and "--rollback" in second.output

    status = invoke("--device", DEVICE, "--devices", device_file, "--status")
    assert status.exit_code == 0, status.output
    assert f"current:  {second_id} (tiny-onnx-b" in status.output
    assert f"previous: {first_id} (tiny-onnx," in status.output

    back = invoke("--device", DEVICE, "--devices", device_file, "--rollback")
    assert back.exit_code == 0, back.output
    assert "rolled back" in back.output and f"current:  {first_id}" in back.output


def test_deploy_bench_adds_a_row_to_the_report(onnx_artifact, device_file, tmp_path):
    report = tmp_path / "run" / "report.json"
    report.parent.mkdir()
    report.write_text(json.dumps(local_report(seq_len=16)))
    result = invoke(onnx_artifact, "--device", DEVICE, "--devices", device_file, "--bench",
                    "--report", report, "--threads", 1)
    assert result.exit_code == 0, result.output
    assert "latency on local:onnxruntime" in result.output and "p50 ms" in result.output
    row = json.loads(report.read_text())["rows"][-1]
    assert [(s["batch_size"], s["seq_len"]) for s in row["latency"]] == [(1, 16), (2, 16)]  # the report's
    assert row["threads"] == 1 and row["latency"][0]["p50_ms"] > 0
    assert "| tiny-onnx | local:onnxruntime |" in (report.parent / "report.md").read_text()


def test_unknown_device_is_a_clean_error(device_file, onnx_artifact):
    result = invoke(onnx_artifact, "--device", "nope", "--devices", device_file)
    assert_usage_error(result, "no device 'nope'")
    assert "known devices: local" in result.output


def test_missing_inventory_is_a_clean_error(tmp_path):
    assert_usage_error(invoke("--device", "pi", "--devices", tmp_path / "none.yaml", "--status"),
                       "does not exist")


@pytest.mark.parametrize("args, fragment", [
    ([], "give an ARTIFACT to deploy, or --status, or --rollback."),
    (["--status", "--rollback"], "not --status and --rollback together"),
    (["--status", "--bench"], "--bench times a fresh deploy"),
    (["ARTIFACT", "--report", "r.json"], "go with --bench"),
    (["ARTIFACT", "--bench", "--batch-sizes", "1,0"], "has a number below 1"),
    (["ARTIFACT", "--bench", "--batch-sizes", "1,x"], "not a comma-separated list of integers"),
    (["ARTIFACT", "--bench", "--report", "missing.json"], "cannot read bench report"),
    (["--status", "--keep", "2"], "--require-gate go with a deploy"),
    (["--to", "abc", "--status"], "not --status and --rollback together"),
    (["ARTIFACT", "--min-agreement", "0"], "--min-agreement"),
])
def test_usage_errors_fail_before_connecting(args, fragment, onnx_artifact, tmp_path):
    # a device nobody listens for: these must fail before any connection is tried
    devices = write_devices(tmp_path / "devices.yaml", {DEVICE: {"transport": "ssh", "host": "127.0.0.1",
                                                                 "port": free_port()}})
    args = [str(onnx_artifact) if a == "ARTIFACT" else a for a in args]
    assert_usage_error(invoke("--device", DEVICE, "--devices", devices, *args), fragment)


def test_help_teaches_with_an_example_inventory():
    result = CliRunner().invoke(main, ["deploy", "--help"])
    assert result.exit_code == 0
    assert "transport: ssh" in result.output and "transport: adb" in result.output
    assert "slimbert deploy --device pi4 --rollback" in result.output


def test_multi_step_rollback_to_and_a_failed_health_check(onnx_artifact, device_file, tmp_path):
    ids = []
    for n in range(3):
        result = invoke(variant(onnx_artifact, tmp_path, n), "--device", DEVICE, "--devices", device_file,
                        "--keep", 2)
        assert result.exit_code == 0, result.output
        assert "health:   100% of 8 recorded examples agree (min 0.875), checked live" in result.output
        ids.append(result.output.split()[1].rstrip(":"))
    status = invoke("--device", DEVICE, "--devices", device_file, "--status")
    assert f"kept:     {ids[1]}, {ids[2]} (oldest first" in status.output  # --keep 2 pruned the first
    back = invoke("--device", DEVICE, "--devices", device_file, "--rollback", "--rollback")
    assert back.exit_code == 2 and "cannot roll back 2 releases" in back.output, back.output
    to = invoke("--device", DEVICE, "--devices", device_file, "--to", ids[1][:8])
    assert to.exit_code == 0 and f"current:  {ids[1]}" in to.output, to.output

    devices = yaml.safe_load(device_file.read_text())
    devices[DEVICE]["python"] = faulty_python(tmp_path, "no-kernel")
    write_devices(device_file, devices)
    bad = invoke(onnx_artifact, "--device", DEVICE, "--devices", device_file)
    assert bad.exit_code == 1 and "Traceback" not in bad.output, bad.output
    assert "failed the health check" in bad.output and f"{ids[1]} stays live" in bad.output
