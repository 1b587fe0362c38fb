"""``python -m slimbert``: the CLI, for launchers that start modules (``accelerate launch -m slimbert``)."""

from slimbert.cli import main

main()
