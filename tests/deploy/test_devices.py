import pytest
import yaml

from slimbert.deploy.devices import get_device, load_devices
from slimbert.errors import DeployError


def write(tmp_path, data):
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
    return path


def test_defaults_and_paths_relative_to_the_file(tmp_path):
    path = write(tmp_path, {"pi": {"transport": "ssh", "host": "10.0.0.5", "user": "pi", "key": "keys/pi",
                                   "known_hosts": "/etc/ssh/known", "threads": 4},
                            "phone": {"transport": "adb", "serial": "ABC123"}})
    devices = load_devices(path)
    pi, phone = devices["pi"], devices["phone"]
    assert (pi.name, pi.port, pi.python, pi.root) == ("pi", 22, "python3", "~/slimbert")
    assert pi.key == str(tmp_path / "keys" / "pi") and pi.known_hosts == "/etc/ssh/known"
    assert pi.address == "pi@10.0.0.5:22" and pi.threads == 4
    assert (phone.root, phone.address) == ("/data/local/tmp/slimbert", "adb serial ABC123")


def test_the_shipped_example_parses():
    from pathlib import Path

    example = Path(__file__).parents[2] / "examples" / "devices.yaml"
    devices = load_devices(example)
    assert {d.transport for d in devices.values()} == {"ssh", "adb"}


def test_unknown_device_lists_the_known_ones(tmp_path):
    path = write(tmp_path, {"pi4": {"transport": "ssh", "host": "h"},
                            "jetson": {"transport": "ssh", "host": "j"}})
    with pytest.raises(DeployError, match=r"no device 'pi3'.*known devices: pi4, jetson") as exc:
        get_device(path, "pi3")
    assert "pi4" in exc.value.hint


def test_unknown_key_names_the_file_the_device_and_a_suggestion(tmp_path):
    path = write(tmp_path, {"pi": {"transport": "ssh", "host": "h", "hots": "x"}})
    with pytest.raises(DeployError, match="unknown key 'hots' in pi") as exc:
        load_devices(path)
    assert str(path) in exc.value.message and "'host'" in exc.value.hint


def test_missing_host_and_missing_serial(tmp_path):
    with pytest.raises(DeployError, match=r"devices.yaml: pi: an ssh device needs 'host'"):
        load_devices(write(tmp_path, {"pi": {"transport": "ssh", "user": "pi"}}))
    with pytest.raises(DeployError, match="an adb device needs 'serial'"):
        load_devices(write(tmp_path, {"phone": {"transport": "adb"}}))


def test_bad_values(tmp_path):
    with pytest.raises(DeployError, match=r"pi.transport is 'sssh'") as exc:
        load_devices(write(tmp_path, {"pi": {"transport": "sssh", "host": "h"}}))
    assert "'ssh'" in exc.value.hint
    with pytest.raises(DeployError, match="pi.port must be int"):
        load_devices(write(tmp_path, {"pi": {"transport": "ssh", "host": "h", "port": "twenty-two"}}))
    with pytest.raises(DeployError, match="give an absolute path"):
        load_devices(write(tmp_path, {"pi": {"transport": "ssh", "host": "h", "root": "~pi/slimbert"}}))
    with pytest.raises(DeployError, match="'key' is for ssh devices"):
        load_devices(write(tmp_path, {"phone": {"transport": "adb", "serial": "S", "key": "k"}}))


def test_missing_or_empty_file(tmp_path):
    with pytest.raises(DeployError, match="does not exist") as exc:
        load_devices(tmp_path / "nope.yaml")
    assert "examples/devices.yaml" in exc.value.hint
    with pytest.raises(DeployError, match="expected a mapping"):
        load_devices(write(tmp_path, ""))


def test_a_device_may_name_its_isa_and_a_deploy_warns_on_an_artifact_tuned_for_another(tmp_path, caplog):
    import json

    from slimbert.deploy.api import warn_on_isa

    path = write(tmp_path, {"pi": {"transport": "ssh", "host": "10.0.0.5", "isa": "arm64-dotprod"},
                            "box": {"transport": "ssh", "host": "10.0.0.6", "isa": "x86-avx2"}})
    devices = load_devices(path)
    artifact = tmp_path / "int8"
    artifact.mkdir()
    (artifact / "manifest.json").write_text(json.dumps({
        "kind": "onnx", "stage": "int8", "stage_type": "quantize-onnx", "inputs_hash": "x",
        "metrics": {"tuned_isa": "x86-avx2"}}))
    with caplog.at_level("WARNING", logger="slimbert.deploy.api"):
        warning = warn_on_isa(artifact, devices["pi"])
    assert warning and "x86-avx2" in warning and "arm64-dotprod" in warning and warning in caplog.text
    assert warn_on_isa(artifact, devices["box"]) is None
    with pytest.raises(DeployError, match="isa"):
        load_devices(write(tmp_path, {"pi": {"transport": "ssh", "host": "h", "isa": "pentium"}}))
