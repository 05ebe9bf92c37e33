"""The commands: each wires its Hydra config (schemas in :mod:`wsss.cli.config`) to library
calls, and nothing more. Run them as ``python -m wsss.<command>`` or ``wsss-<command>``."""
