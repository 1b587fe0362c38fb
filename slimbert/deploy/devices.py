"""The device inventory: ``devices.yaml`` maps a device name to how to reach it.

Paths in the file (``key``, ``known_hosts``) are relative to the file, so an inventory and
its keys can live together in a repository or a secrets folder and be used from anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from slimbert.errors import DeployError, RecipeError
from slimbert.hw import ISA_NAMES
from slimbert.schema import from_dict

DEFAULT_ROOTS = {"ssh": "~/slimbert", "adb": "/data/local/tmp/slimbert"}
EXAMPLE_HINT = "see examples/devices.yaml (or `slimbert deploy --help`) for the format."


@dataclass
class Device:
    """One device: the transport and where slimbert installs bundles on it."""

    transport: Literal["ssh", "adb"]
    host: str | None = None  # ssh
    port: int = 22  # ssh
    user: str | None = None  # ssh; None: ssh's default (your user name or ~/.ssh/config)
    key: str | None = None  # ssh identity file; None: ssh-agent / ~/.ssh/config
    known_hosts: str | None = None  # ssh; host keys are checked against it (else ~/.ssh/known_hosts)
    trust_on_first_use: bool = False  # ssh; accept (and record) a host key never seen before
    serial: str | None = None  # adb, as `adb devices` lists it
    python: str = "python3"  # command on the device, e.g. /opt/venv/bin/python
    root: str | None = None  # install folder; default per transport (DEFAULT_ROOTS)
    threads: int | None = None  # intra-op threads for the bench; None: all cores
    keep: int = 3  # releases kept on the device (current and previous always are)
    lock_timeout_s: int = 300  # how long a deploy waits for another one on the device to finish
    # the device CPU's instruction set (slimbert.hw.ISA_NAMES, e.g. arm64-dotprod): a deploy warns
    # when an INT8 artifact's scheme was measured on another (build it with target_isa: this)
    isa: str | None = None
    name: str = field(default="", init=False)  # set by load_devices: the key in devices.yaml
    source: str = field(default="", init=False)  # set by load_devices: the file it came from

    def __post_init__(self) -> None:
        if self.transport == "ssh":
            if not self.host:
                raise ValueError("an ssh device needs 'host'")
            if self.serial is not None:
                raise ValueError("'serial' is for adb devices; an ssh device is reached by host/port")
            if not 1 <= self.port <= 65535:
                raise ValueError(f"port must be in 1..65535, got {self.port}")
        elif self.transport == "adb":
            if not self.serial:
                raise ValueError("an adb device needs 'serial' (the first column of `adb devices`)")
            extra = [k for k in ("host", "user", "key", "known_hosts") if getattr(self, k) is not None]
            extra += ["trust_on_first_use"] if self.trust_on_first_use else []
            if extra:
                raise ValueError(f"{extra[0]!r} is for ssh devices; an adb device is reached by serial")
        if self.isa is not None and self.isa not in ISA_NAMES:
            raise ValueError(f"isa must be one of {', '.join(ISA_NAMES)}, got {self.isa!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.keep < 1:
            raise ValueError(f"keep must be >= 1 (releases kept on the device), got {self.keep}")
        if self.lock_timeout_s < 0:
            raise ValueError(f"lock_timeout_s must be >= 0, got {self.lock_timeout_s}")
        if not self.python.strip():
            raise ValueError("python must name a command, e.g. python3")
        self.root = (self.root or DEFAULT_ROOTS[self.transport]).rstrip("/") or "/"
        if self.root.startswith("~") and not (self.root == "~" or self.root.startswith("~/")):
            raise ValueError(f"root {self.root!r}: give an absolute path or one under your home (~/...)")

    @property
    def address(self) -> str:
        """How the device is reached, for messages."""
        if self.transport == "adb":
            return f"adb serial {self.serial}"
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"


def _resolve_path(value: str | None, base: Path) -> str | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def parse_devices(data: object, source: str, base: Path) -> dict[str, Device]:
    """Devices from the parsed YAML ``data``; errors name ``source`` and the key."""
    if not isinstance(data, dict) or not data:
        raise DeployError(f"{source}: expected a mapping of device name -> settings, got {data!r}.",
                          hint=EXAMPLE_HINT)
    devices = {}
    for name, settings in data.items():
        try:
            device = from_dict(Device, settings, source=source, path=str(name))
        except RecipeError as exc:
            raise DeployError(exc.message, hint=exc.hint or EXAMPLE_HINT) from None
        device.name, device.source = str(name), source
        device.key = _resolve_path(device.key, base)
        device.known_hosts = _resolve_path(device.known_hosts, base)
        devices[str(name)] = device
    return devices


def load_devices(path: Path) -> dict[str, Device]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeployError(f"device inventory {path} does not exist.",
                          hint=f"create it or pass --devices FILE; {EXAMPLE_HINT}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:  # a binary file: not UTF-8 YAML
        raise DeployError(f"cannot read device inventory {path}: {exc}", hint=EXAMPLE_HINT) from None
    return parse_devices(data, str(path), path.resolve().parent)


def get_device(path: Path, name: str) -> Device:
    """The device called ``name`` in the inventory at ``path``."""
    devices = load_devices(path)
    if name not in devices:
        import difflib

        close = difflib.get_close_matches(name, list(devices), n=1)
        raise DeployError(f"no device {name!r} in {path}; known devices: {', '.join(devices)}.",
                          hint=f"did you mean {close[0]!r}?" if close else f"add it to {path}.")
    return devices[name]
