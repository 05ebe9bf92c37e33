"""Datasets: the folder format, VOC 2012 (+SBD), COCO, the built-in synthetic dataset, and image
reading. Every format is a settings class in :data:`DATASETS` (the ``dataset`` config group)."""

from wsss.data.coco import CocoDataset, load_coco_split
from wsss.data.datasets import DATASETS, DatasetSettings
from wsss.data.folder import FolderDataset, load_split
from wsss.data.images import load_image, load_label_map, save_label_map
from wsss.data.split import LabelledSplit, Sample
from wsss.data.synthetic import SyntheticDataset, SyntheticSpec, ensure_synthetic_dataset
from wsss.data.voc import VOC_CLASSES, VocDataset, load_voc_split

__all__ = [
    "DATASETS",
    "CocoDataset",
    "DatasetSettings",
    "FolderDataset",
    "LabelledSplit",
    "Sample",
    "SyntheticDataset",
    "SyntheticSpec",
    "VOC_CLASSES",
    "VocDataset",
    "ensure_synthetic_dataset",
    "load_coco_split",
    "load_image",
    "load_label_map",
    "load_split",
    "load_voc_split",
    "save_label_map",
]
