"""The loops: training the classifier (and caching it), generating a run folder of pseudo-masks,
scoring it, explaining a classifier, and training a segmentation model on the masks."""
