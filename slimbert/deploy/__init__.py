"""Ship an ONNX artifact to a device over SSH or adb, install it safely, benchmark it there.

Modules, one job each: ``bundle`` (the folder that travels), ``runner`` (the standalone
script that runs on the device), ``devices`` (devices.yaml), ``transports`` (ssh/scp, adb),
``install`` (upload, verify, atomic switch, rollback, status) and ``remote_bench`` (the
device's latency as a bench report row). Nothing is imported here, so that
``slimbert deploy --status`` does not pay for torch, which only bundling needs.
"""
