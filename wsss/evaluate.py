"""``python -m wsss.evaluate``: see :mod:`wsss.cli.evaluate`."""

from wsss.cli.evaluate import main

if __name__ == "__main__":
    main()
