import pytest
import torch

from wsss.errors import CheckpointError, ConfigError
from wsss.models import (
    ModelSpec,
    create_backbone,
    create_classifier,
    list_backbones,
    load_checkpoint,
    save_checkpoint,
)


@pytest.mark.parametrize(
    ("name", "kwargs", "stride"),
    [
        ("smallcnn", {"width": 8}, 8),
        ("resnet18", {"output_stride": 16}, 16),
        ("resnet18", {"output_stride": 32}, 32),
        ("resnet18", {"output_stride": 8, "dilated": True}, 8),
        ("resnet34", {"output_stride": 16, "dilated": True}, 16),
        ("resnet50", {"output_stride": 16}, 16),
        ("resnet50", {"output_stride": 8, "dilated": True}, 8),
        ("resnet101", {"output_stride": 16}, 16),
        ("efficientnet_lite0", {"output_stride": 16}, 16),
        ("efficientnet_lite0", {"output_stride": 32}, 32),
        ("timm", {"model_name": "resnet18d", "output_stride": 16}, 16),
    ],
)
def test_backbones_honour_their_output_stride(name, kwargs, stride):
    backbone = create_backbone(name, **kwargs).eval()
    with torch.no_grad():
        features = backbone(torch.rand(1, 3, 64, 96))
    assert features.shape == (1, backbone.out_channels, 64 // stride, 96 // stride)
    assert backbone.output_stride == stride


def test_dilation_follows_torchvision_segmentation_resnets():
    """OS 8 with dilation is exactly torchvision's replace_stride_with_dilation=[F, T, T]."""
    import torchvision

    ours = create_backbone("resnet50", output_stride=8, dilated=True, freeze_bn=False)
    reference = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
    pairs = zip(
        [m for m in ours.modules() if isinstance(m, torch.nn.Conv2d)],
        [m for m in reference.modules() if isinstance(m, torch.nn.Conv2d)],
        strict=True,
    )
    for a, b in pairs:
        assert (a.stride, a.dilation, a.padding) == (b.stride, b.dilation, b.padding)


def test_registry_lists_and_rejects():
    assert {"smallcnn", "resnet18", "resnet50"} <= set(list_backbones())
    with pytest.raises(ConfigError, match="unknown backbone 'resnet9'"):
        create_backbone("resnet9")
    with pytest.raises(ConfigError, match="unknown weights 'IMAGENET9'"):
        create_backbone("resnet18", pretrained="IMAGENET9")


def test_frozen_batch_norm_stays_fixed_in_train_mode():
    backbone = create_backbone("resnet18", freeze_bn=True).train()
    before = {k: v.clone() for k, v in backbone.state_dict().items() if "bn1" in k}
    backbone(torch.rand(2, 3, 64, 64))
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())


def test_classifier_logits_equal_pooled_cam():
    """The CAM identity: the class score is the spatial mean of the class's (pre-ReLU) map."""
    model = create_classifier(ModelSpec("smallcnn", None, {"width": 8}), num_classes=4).eval()
    images = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        features = model.forward_features(images)
        maps = torch.einsum("kc,bchw->bkhw", model.cam_weights, features)
        assert torch.allclose(model(images), maps.mean(dim=(2, 3)), atol=1e-5)


def test_local_weights_file_loads_into_resnet(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    loaded = create_backbone("resnet18", pretrained=str(tmp_path / "r18.pth"))
    assert torch.equal(loaded.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match="does not match resnet18"):
        create_backbone("resnet18", pretrained=str(tmp_path / "wrong.pth"))


def test_checkpoint_round_trip_is_weights_only(tmp_path):
    spec = ModelSpec("smallcnn", None, {"width": 8})
    model = create_classifier(spec, 3).eval()
    save_checkpoint(tmp_path / "c.pt", model, spec, ["a", "b", "c"], {"val_map": 0.5})
    payload = torch.load(tmp_path / "c.pt", weights_only=True)  # must not raise
    assert payload["class_names"] == ["a", "b", "c"]
    loaded = load_checkpoint(tmp_path / "c.pt")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    assert loaded.metrics == {"val_map": 0.5}


def test_bad_checkpoints_give_clear_errors(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or unsafe checkpoint"):
        load_checkpoint(tmp_path / "garbage.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a wsss classifier checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_segmentation_backbone_weights_load_strictly_or_name_what_is_missing(tmp_path):
    """A classifier's whole state dict loads into the segmentation backbone (its head left
    out); a file missing backbone tensors is refused with the count and names, not half loaded."""
    from torchvision.models import mobilenet_v3_large

    from wsss.errors import ConfigError
    from wsss.models.segmentation import build_segmentation_model

    torch.manual_seed(0)
    classifier = mobilenet_v3_large(weights=None)
    path = tmp_path / "mobilenet.pth"
    torch.save(classifier.state_dict(), path)
    model = build_segmentation_model("lraspp_mobilenet_v3_large", 3, str(path))
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, classifier.features.state_dict()[key]), key
    partial = {k: v for k, v in classifier.state_dict().items() if not k.startswith("features.3")}
    torch.save(partial, path)
    with pytest.raises(ConfigError, match=r"mobilenet.pth: does not match .* tensors missing"):
        build_segmentation_model("lraspp_mobilenet_v3_large", 3, str(path))


def test_the_segmentation_head_learns_head_lr_mult_times_faster(tiny_dataset):
    """One AdamW step moves each parameter by about its learning rate (m / sqrt(v) is the sign
    of the gradient on the first step): the largest move of the backbone is ``lr``, of the head
    ``lr * head_lr_mult``. The groups split every trainable parameter once."""
    from wsss.data import load_split
    from wsss.engine.segmentation import SegmentationSettings, train_segmentation
    from wsss.engine.training import parameter_groups
    from wsss.models.segmentation import build_segmentation_model

    split = load_split(tiny_dataset, "eval.csv")
    settings = SegmentationSettings(epochs=1, batch_size=4, crop_size=32, optimizer="adamw",
                                    lr=1e-3, head_lr_mult=10, weight_decay=0.0)  # fmt: skip
    torch.manual_seed(0)
    model = build_segmentation_model(settings.model, len(split.class_names) + 1, None)
    groups = parameter_groups(model, settings)
    assert [g["lr"] for g in groups] == [1e-3, 1e-2]
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.backbone.parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_segmentation(model, list(split.samples)[:4], split.ground_truth, settings, seed=0)
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters()}
    backbone = max(v for n, v in moved.items() if n.startswith("backbone."))
    head = max(v for n, v in moved.items() if not n.startswith("backbone."))
    assert backbone == pytest.approx(1e-3, rel=0.01)
    assert head == pytest.approx(1e-2, rel=0.01)
    with pytest.raises(ConfigError, match="optimizer"):
        SegmentationSettings(optimizer="rmsprop").validate()
