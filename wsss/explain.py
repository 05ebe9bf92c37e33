"""``python -m wsss.explain``: see :mod:`wsss.cli.explain`."""

from wsss.cli.explain import main

if __name__ == "__main__":
    main()
