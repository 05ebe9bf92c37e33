"""``python -m wsss.train_affinity``: see :mod:`wsss.cli.train_affinity`."""

from wsss.cli.train_affinity import main

if __name__ == "__main__":
    main()
