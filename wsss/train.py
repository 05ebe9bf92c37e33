"""``python -m wsss.train``: see :mod:`wsss.cli.train`."""

from wsss.cli.train import main

if __name__ == "__main__":
    main()
