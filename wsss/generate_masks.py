"""``python -m wsss.generate_masks``: see :mod:`wsss.cli.generate_masks`."""

from wsss.cli.generate_masks import main

if __name__ == "__main__":
    main()
