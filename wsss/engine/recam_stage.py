"""What ``cam=recam`` needs, made on the way and cached: the classifier fine-tuned with ReCAM's
second head (Chen et al., "Class Re-Activation Maps", CVPR 2022).

    recam   train_classifier(the run's classifier, objective=ReCamLoss) on the train split
            -> <cache>/recam/<key>/checkpoint.pt  (a classifier checkpoint whose ``extra``
               holds ReCAM's class weights, the product of the two heads' weights)

ReCAM's loss adds to the multi-label soft margin a softmax cross-entropy over each present
class's CAM-weighted feature (the features pooled under the class's own map, normalised to a
maximum of 1), from a second bias-free linear head: the classes of one photo compete for its
pixels, which re-activates the parts a sigmoid loss leaves out and keeps one class's map off
another's object. ReCAM continues from the trained classifier for a few epochs with SGD, the
backbone and the first head at a tenth of the new head's learning rate; its map of class c is the
CAM with the element-wise product of the two heads' weights of c.

The key is a digest of the classifier's weights, the dataset and split, the recipe and the
seed, so a rerun reuses the file and a change anywhere upstream makes a new one.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wsss import distributed
from wsss.cams.methods import ReCam
from wsss.data.datasets import DatasetSettings
from wsss.data.screen import BadImages
from wsss.engine.classifiers import labelled_only
from wsss.engine.training import TrainSettings, train_classifier
from wsss.io import json_digest
from wsss.models import LoadedClassifier, save_checkpoint
from wsss.models.classifier import CAMClassifier, weights_digest

log = logging.getLogger(__name__)


class ReCamLoss(nn.Module):
    """ReCAM's objective (an objective of :func:`~wsss.engine.training.train_classifier`): the
    multi-label soft margin of the classifier's scores plus ``weight`` times the mean, over a
    batch's photos, of the softmax cross-entropy of each present class's CAM-weighted feature
    under the new head (averaged over the photo's present classes)."""

    def __init__(self, classifier: CAMClassifier, weight: float = 1.0):
        super().__init__()
        self.classifier = classifier
        self.weight = weight
        channels = classifier.cam_weights.shape[1]
        self.head = nn.Linear(channels, classifier.num_classes, bias=False)

    @property
    def backbone(self) -> nn.Module:
        """The part trained at ``train.lr``: the backbone and the first head (ReCAM's 0.1x)."""
        return nn.ModuleList([self.classifier.backbone, self.classifier.get_classifier()])

    def class_weights(self) -> torch.Tensor:
        """(K, C): ReCAM's weights of the maps, the two heads' weights multiplied."""
        return (self.head.weight * self.classifier.cam_weights).detach().cpu()

    def forward(self, images: torch.Tensor, targets: torch.Tensor, amp: dict) -> torch.Tensor:
        with torch.autocast(images.device.type, **amp):
            features = self.classifier.forward_features(images)
            logits = self.classifier.forward_head(features)
        features = features.float()
        loss = F.multilabel_soft_margin_loss(logits.float(), targets)
        return loss + self.weight * self.class_loss(features, targets)

    def class_loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The cross-entropy term: (B, C, h, w) features, (B, K) multi-hot targets."""
        pooled = class_features(features, self.classifier.cam_weights.float())
        image, present = (targets > 0.5).nonzero(as_tuple=True)
        if not len(image):
            return features.sum() * 0.0
        return photo_cross_entropy(self.head(pooled[image, present]), present, image, len(targets))


def class_features(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, K, C): each class's CAM-weighted feature of each photo, the mean over the pixels of
    the features times the class's map (ReLU, normalised to a maximum of 1) under ``weights``
    (K, C)."""
    maps = torch.relu(torch.einsum("kc,bchw->bkhw", weights, features))
    maps = maps / (maps.amax(dim=(2, 3), keepdim=True) + 1e-5)
    return torch.einsum("bkhw,bchw->bkc", maps, features) / features[0, 0].numel()


def photo_cross_entropy(
    logits: torch.Tensor, classes: torch.Tensor, photo: torch.Tensor, photos: int
) -> torch.Tensor:
    """ReCAM's averaging of the cross-entropy of each (photo, present class) pair's ``logits``
    against its class: the mean over each photo's pairs, summed over photos, over ``photos``."""
    each = F.cross_entropy(logits, classes, reduction="none")
    per_photo = torch.zeros(photos, device=each.device).index_add_(0, photo, each)
    counts = torch.bincount(photo, minlength=photos).clamp(min=1)
    return (per_photo / counts).sum() / photos


def recam_for(
    classifier: LoadedClassifier,
    dataset: DatasetSettings,
    split: str,
    cam: ReCam,
    train: TrainSettings,
    cache_dir: Path,
    *,
    device: torch.device | str = "cpu",
    bad: BadImages | None = None,
    amp: bool = False,
    num_workers: int = 0,
    seed: int = 0,
) -> Path:
    """The ReCAM checkpoint of ``classifier`` fine-tuned on ``split``'s labelled photos with
    ``train``'s recipe at ``cam.fit``'s epochs, learning rate and loss weight; trained once and
    cached (resumable after an interrupted epoch)."""
    fine_tuning = replace(
        train, epochs=cam.fit.epochs, lr=cam.fit.lr, head_lr_mult=cam.fit.head_lr_mult,
        optimizer=cam.fit.optimizer, weight_decay=cam.fit.weight_decay, momentum=0.9,
        schedule="poly", warmup_epochs=0.0,
    )  # fmt: skip
    parts = {
        "classifier": weights_digest(classifier.model), "dataset": asdict(dataset),
        "split": split, "train": asdict(fine_tuning), "loss_weight": cam.fit.loss_weight,
        "seed": seed,
    }  # fmt: skip
    key = json_digest(parts)
    path = Path(cache_dir) / "recam" / key / "checkpoint.pt"
    if path.is_file():
        log.info("reusing the ReCAM classifier %s", path)
        return path
    bad = bad or BadImages()
    photos = labelled_only(bad.screen(dataset.load(split, cache_dir=cache_dir)))
    log.info("ReCAM: fine-tuning the classifier on %d labelled images of %r, %d epochs (cached "
             "at %s)", len(photos), split, fine_tuning.epochs, path)  # fmt: skip
    model = copy.deepcopy(classifier.model).cpu()  # the caller's classifier stays as it is
    torch.manual_seed(seed)
    objective = ReCamLoss(model, cam.fit.loss_weight)
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = train_classifier(
        model, photos, None, fine_tuning, device, bad, amp=amp, num_workers=num_workers, seed=seed,
        state_path=path.parent / "training_state.pt", state_key=key,
        objective=objective,
    )  # fmt: skip
    if distributed.is_main():
        save_checkpoint(
            path, model, classifier.spec, classifier.class_names, metrics,
            extra={"recam_weights": objective.class_weights()},
        )  # fmt: skip
        (path.parent / "training_state.pt").unlink(missing_ok=True)
    distributed.barrier()
    return path
