"""``python -m wsss.train_segmentation``: see :mod:`wsss.cli.train_segmentation`."""

from wsss.cli.train_segmentation import main

if __name__ == "__main__":
    main()
