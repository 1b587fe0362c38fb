"""Mobile targets are registered, probed, and explain how to install what is missing."""

import sys

import pytest

from slimbert.errors import RuntimeUnavailable
from slimbert.export.executorch import ExecutorchConfig, export_executorch
from slimbert.runtimes import all_runtimes, get_runtime
from slimbert.stages import STAGES


def test_mobile_targets_are_registered_with_phone_threads():
    runtimes = all_runtimes()
    for name, kind in (("ort-mobile", "ort-mobile"), ("executorch-xnnpack", "executorch")):
        assert runtimes[name].kind == kind and runtimes[name].device == "mobile"
        assert 1 <= runtimes[name].default_threads <= 4
    assert runtimes["ort-mobile"].unavailable_reason() is None
    assert STAGES["export-ort-mobile"].output_format == "ort-mobile"
    assert STAGES["export-executorch"].output_format == "executorch"


def test_without_executorch_the_target_and_stage_say_how_to_install(monkeypatch, tiny_classifier, tmp_path):
    monkeypatch.setitem(sys.modules, "executorch.runtime", None)  # import now raises ImportError
    reason = all_runtimes()["executorch-xnnpack"].unavailable_reason()
    assert "not installed" in reason and ".[mobile]" in reason
    with pytest.raises(RuntimeUnavailable, match="not available here"):
        get_runtime("executorch-xnnpack")
    with pytest.raises(RuntimeUnavailable, match="needs ExecuTorch") as info:
        export_executorch(tiny_classifier, tmp_path, ExecutorchConfig(), None)
    assert ".[mobile]" in info.value.hint
