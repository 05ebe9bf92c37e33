"""wsss: segmentation masks from image-level labels (CAM family, dense CRF, COCO export).

The stages are packages (``data``, ``models``, ``cams``, ``masks``, ``export``, ``metrics``),
the loops over datasets are in ``engine``, and the commands in ``cli``. Importing wsss
initialises nothing (no Hydra, no process group).
"""

__version__ = "0.2.0"
