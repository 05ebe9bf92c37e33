"""``python -m wsss.export``: see :mod:`wsss.cli.export`."""

from wsss.cli.export import main

main()
