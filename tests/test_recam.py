"""ReCAM (wsss.engine.recam_stage, cam=recam): the loss against ReCAM's per-photo loop written
independently, the maps against the product of the two heads' weights, the fine-tuning through
train_classifier, and cam=recam through generate_masks (fine-tuned once, then reused)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from wsss.cams import compute_cams
from wsss.cams.methods import ReCam
from wsss.engine.recam_stage import ReCamLoss
from wsss.errors import CheckpointError, ConfigError
from wsss.models import ModelSpec, create_classifier, load_checkpoint, save_checkpoint

SPEC = ModelSpec("smallcnn", None, {"width": 8})


def _model(classes: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    return create_classifier(SPEC, classes).eval()


def _reference_class_loss(features, cam_weights, head, targets) -> torch.Tensor:
    """ReCAM's Class_Predictor, photo by photo: each present class's feature pooled under its
    max-normalised CAM, the cross-entropy over the photo's present classes, summed over photos
    and divided by the batch size (a photo without classes adds nothing)."""
    total = torch.zeros(())
    for i in range(len(features)):
        present = [k for k in range(targets.shape[1]) if targets[i, k] > 0]
        if not present:
            continue
        rows = []
        for k in present:
            cam = torch.relu((cam_weights[k][:, None, None] * features[i]).sum(0))
            cam = cam / (cam.max() + 1e-5)
            rows.append((cam[None] * features[i]).mean(dim=(1, 2)))
        logits = torch.stack(rows) @ head.T
        total = total + F.cross_entropy(logits, torch.tensor(present))
    return total / len(features)


def test_recam_loss_is_the_soft_margin_plus_recams_cross_entropy():
    model = _model()
    objective = ReCamLoss(model, weight=0.5)
    torch.nn.init.normal_(objective.head.weight, generator=torch.Generator().manual_seed(1))
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]])
    with torch.no_grad():
        loss = objective(images, targets, {"enabled": False})
        features = model.forward_features(images)
        expected_ce = _reference_class_loss(
            features, model.cam_weights, objective.head.weight, targets
        )
        expected = F.multilabel_soft_margin_loss(model(images), targets) + 0.5 * expected_ce
    assert expected_ce > 0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_recam_trains_the_backbone_and_first_head_at_the_slow_rate():
    objective = ReCamLoss(_model())
    slow = {id(p) for p in objective.backbone.parameters()}
    assert id(objective.classifier.get_classifier().weight) in slow
    assert id(objective.head.weight) not in slow
    assert objective.class_weights().shape == (4, objective.classifier.cam_weights.shape[1])


def _recam_checkpoint(path, model, weights) -> str:
    save_checkpoint(path, model, SPEC, list("abcd"), extra={"recam_weights": weights})
    return str(path)


def test_recam_maps_are_the_cam_of_the_product_weights(tmp_path):
    model = _model()
    weights = torch.randn(4, model.cam_weights.shape[1], generator=torch.Generator().manual_seed(3))
    checkpoint = _recam_checkpoint(tmp_path / "recam.pt", model, weights)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    maps = ReCam(checkpoint=checkpoint, scales=[1.0], flip=False).compute(
        model, images, [[0, 2], [3]]
    )
    features = model.forward_features(images).detach()
    for i, classes in enumerate([[0, 2], [3]]):
        for row, k in enumerate(classes):
            expected = torch.relu((weights[k][:, None, None] * features[i]).sum(0))
            torch.testing.assert_close(maps[i][row], expected, rtol=1e-4, atol=1e-5)
    # the classifier's own weights give other maps (CAM's)
    cam = compute_cams(model, images, [[0, 2], [3]], method="cam")
    assert not torch.allclose(cam[0], maps[0])


def test_recam_needs_a_checkpoint_with_recam_weights(tmp_path):
    model, images = _model(), torch.rand(1, 3, 32, 32)
    with pytest.raises(ConfigError, match="cam.checkpoint"):
        ReCam().compute(model, images, [[0]])
    save_checkpoint(tmp_path / "plain.pt", model, SPEC, list("abcd"))
    with pytest.raises(CheckpointError, match="plain.pt: not a ReCAM checkpoint"):
        ReCam(checkpoint=str(tmp_path / "plain.pt")).compute(model, images, [[0]])
    with pytest.raises(CheckpointError, match="missing.pt: ReCAM checkpoint not found"):
        ReCam(checkpoint=str(tmp_path / "missing.pt")).compute(model, images, [[0]])
    three = _recam_checkpoint(tmp_path / "three.pt", model, torch.ones(3, 8))
    with pytest.raises(ConfigError, match="ReCAM weights of 3 classes for a classifier of 4"):
        ReCam(checkpoint=three).compute(model, images, [[0]])


def test_generate_masks_fine_tunes_recam_once_and_reuses_it(tmp_path):
    from commands import GENERATE_TINY, run

    args = [*GENERATE_TINY, "cam=recam", "cam.fit.epochs=1", "cam.scales=[1.0]"]
    run("wsss.generate_masks", *args, f"hydra.run.dir={tmp_path / 'a'}",
        cwd=tmp_path, cache=tmp_path / "cache")  # fmt: skip
    files = list((tmp_path / "cache" / "recam").glob("*/checkpoint.pt"))
    log = (tmp_path / "a" / "generate_masks.log").read_text()
    assert len(files) == 1 and "fine-tuning one on the 'train' split" in log
    assert not list((tmp_path / "cache" / "recam").glob("*/training_state.pt"))
    recam = load_checkpoint(files[0])
    classifier = load_checkpoint(next((tmp_path / "cache" / "classifiers").glob("*/*.pt")))
    # the backbone moved (it was fine-tuned) and the file holds the product weights
    moved = [
        not torch.equal(a, b)
        for a, b in zip(
            recam.model.state_dict().values(), classifier.model.state_dict().values(), strict=True
        )
    ]
    assert any(moved)
    payload = torch.load(files[0], weights_only=True)
    assert payload["extra"]["recam_weights"].shape == recam.model.cam_weights.shape
    run("wsss.generate_masks", *args, f"hydra.run.dir={tmp_path / 'b'}",
        cwd=tmp_path, cache=tmp_path / "cache")  # fmt: skip
    assert "reusing the ReCAM classifier" in (tmp_path / "b" / "generate_masks.log").read_text()
    a = sorted((tmp_path / "a" / "masks").glob("*.png"))
    b = sorted((tmp_path / "b" / "masks").glob("*.png"))
    assert a and [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_a_recam_checkpoint_rewritten_in_place_keys_new_maps(tmp_path):
    """The maps cache names ReCAM's maps by the checkpoint's bytes, not its path."""
    from wsss.masks.maps_cache import maps_key

    model = _model()
    path = _recam_checkpoint(tmp_path / "recam.pt", model, torch.ones(4, 8))
    first = maps_key("weights", ReCam(checkpoint=path), False)
    assert maps_key("weights", ReCam(checkpoint=path), False) == first
    _recam_checkpoint(tmp_path / "recam.pt", model, 2 * torch.ones(4, 8))
    assert maps_key("weights", ReCam(checkpoint=path), False) != first


def test_recam_fine_tunes_with_recams_optimiser(tmp_path, monkeypatch):
    """ReCAM's SGD with momentum, poly schedule and weight decay, at cam.fit's rates and epochs,
    over the run's other training settings (batch, crops); AdamW only when asked for."""
    from wsss.data.synthetic import SyntheticDataset
    from wsss.engine import recam_stage
    from wsss.engine.training import TrainSettings
    from wsss.models import LoadedClassifier

    seen = {}

    def capture(model, photos, val, recipe, *args, **kwargs):
        seen["recipe"] = recipe
        raise RuntimeError("stop here")

    monkeypatch.setattr(recam_stage, "train_classifier", capture)
    classifier = LoadedClassifier(_model(), SPEC, tuple("abcd"), {})
    dataset = SyntheticDataset(num_train=4, num_eval=1, image_size=32)
    run = TrainSettings(optimizer="adamw", lr=3e-4, schedule="cosine", batch_size=5, epochs=10)
    with pytest.raises(RuntimeError, match="stop here"):
        recam_stage.recam_for(classifier, dataset, "train", ReCam(), run, tmp_path)
    recipe = seen["recipe"]
    assert (recipe.optimizer, recipe.schedule, recipe.momentum) == ("sgd", "poly", 0.9)
    assert (recipe.lr, recipe.head_lr_mult, recipe.epochs) == (5e-4, 10.0, 4)
    assert (recipe.weight_decay, recipe.warmup_epochs, recipe.batch_size) == (1e-4, 0.0, 5)
    adamw = ReCam(fit=replace(ReCam().fit, optimizer="adamw"))
    with pytest.raises(RuntimeError, match="stop here"):
        recam_stage.recam_for(classifier, dataset, "train", adamw, run, tmp_path)
    assert seen["recipe"].optimizer == "adamw"
    with pytest.raises(ConfigError, match="cam.fit.optimizer"):
        ReCam(fit=replace(ReCam().fit, optimizer="adam")).validate()
