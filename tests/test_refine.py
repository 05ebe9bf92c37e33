"""Map refiners: PAR, IRN's affinities and random walk (against a dense reference), training
the boundary network, and both through the pipeline and the commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from commands import GENERATE_TINY, TINY, run

from wsss.cams import ClassifierCam
from wsss.errors import CheckpointError, ConfigError
from wsss.masks import IrnSettings, MaskPredictor, ParSettings, SuperpixelSettings
from wsss.masks.random_walk import line, path_affinities, random_walk
from wsss.masks.refine import par_affinity, region_means
from wsss.models import ModelSpec, create_classifier
from wsss.models.boundary import BoundaryNet, load_boundary_net, save_boundary_net


def _square_scene():
    """A red square on a grey image, and a map that covers only its left part."""
    image = np.full((64, 64, 3), 120, np.uint8)
    image[16:48, 16:48] = (220, 30, 30)
    cams = np.zeros((1, 64, 64), np.float32)
    cams[0, 24:40, 18:30] = 1.0
    return image, cams, np.pad(np.ones((32, 32), bool), 16)


def test_par_affinity_rows_sum_to_one_plus_w2():
    image = torch.rand(3, 20, 24)
    affinity, offsets = par_affinity(image, [1, 2, 4], w1=0.3, w2=0.01)
    assert affinity.shape == (24, 20, 24) and len(offsets) == 24
    assert torch.allclose(affinity.sum(0), torch.full((20, 24), 1.01), atol=1e-5)


def test_par_spreads_a_map_over_its_object_and_not_beyond():
    image, cams, square = _square_scene()
    refined = ParSettings(scale=1.0).refine(image, cams, [0])[0]
    assert refined.max() == pytest.approx(1.0)
    before = (cams[0] >= 0.3)[square].mean()
    after = (refined >= 0.3)[square].mean()
    assert after > before + 0.2, (before, after)
    assert refined[~square].mean() < 0.25 * refined[square].mean()


def test_region_means_average_each_map_within_its_regions_then_rescale():
    regions = np.array([[0, 0, 1], [0, 2, 1]])
    cams = np.array([[[0.9, 0.3, 0.2], [0.0, 0.5, 0.4]]], np.float32)
    # naive: region 0 holds 0.9, 0.3, 0.0 (mean 0.4); region 1 0.2, 0.4 (0.3); region 2 0.5
    means = np.array([[0.4, 0.4, 0.3], [0.4, 0.5, 0.3]])
    np.testing.assert_allclose(region_means(cams, regions)[0], means / 0.5, rtol=1e-6)
    half = 0.5 * means + 0.5 * cams[0]
    np.testing.assert_allclose(region_means(cams, regions, 0.5)[0], half / half.max(), rtol=1e-6)
    np.testing.assert_allclose(region_means(cams, regions, 0.0), cams / 0.9, rtol=1e-6)


def test_superpixels_cut_a_map_that_spills_over_a_colour_edge():
    """A map covering the square and a band of the grey around it: averaged within SLIC's
    regions, the grey band's regions (mostly unmapped) fall, the square's rise."""
    image, _, square = _square_scene()
    cams = np.zeros((1, 64, 64), np.float32)
    cams[0, 12:52, 12:40] = 1.0  # the square's left part, and 4 px of grey around it
    refined = SuperpixelSettings(segments=40).refine(image, cams, [0])[0]
    spill = ~square & (cams[0] > 0)
    assert refined.max() == pytest.approx(1.0)
    assert (refined >= 0.5)[spill].mean() < 0.5 * (cams[0] >= 0.5)[spill].mean()
    assert (refined >= 0.5)[square].mean() >= (cams[0] >= 0.5)[square].mean()


def test_superpixel_settings_are_checked():
    for bad in ({"segments": 0}, {"compactness": 0.0}, {"mix": 1.5}):
        with pytest.raises(ConfigError, match="refine"):
            SuperpixelSettings(**bad).validate()


def test_a_boundary_cuts_the_affinity_of_pairs_across_it():
    boundary = torch.zeros(1, 1, 12, 12)
    boundary[..., :, 6] = 1.0  # a vertical wall
    affinity, offsets = path_affinities(boundary, radius=4)
    across = offsets.index((0, 3))
    along = offsets.index((3, 0))
    assert torch.all(affinity[0, across, :, 4] == 0)  # from column 4 to 7 crosses column 6
    assert torch.all(affinity[0, along, :9, 2] == 1)  # down column 2: no wall
    assert line(2, 4) == [(0, 0), (0, 1), (1, 2), (2, 3), (2, 4)]


def test_the_sparse_random_walk_equals_the_dense_matrix_power():
    torch.manual_seed(0)
    boundary = torch.rand(1, 1, 9, 11) * 0.6
    affinity, offsets = path_affinities(boundary, radius=4)
    dense = _dense_transition(affinity[0], offsets, beta=10.0)  # T[i, j], float64
    assert torch.allclose(dense.sum(0), torch.ones(99, dtype=torch.float64)), "columns sum to 1"
    maps = torch.rand(2, 9, 11)
    expected = maps.double().reshape(2, -1) @ torch.linalg.matrix_power(dense, 2**5)
    walked = random_walk(maps, affinity[0], offsets, beta=10.0, exp_times=5)
    assert torch.allclose(walked.reshape(2, -1).double(), expected, atol=1e-5)


def _dense_transition(affinity, offsets, beta: float) -> torch.Tensor:
    """IRN's T from its definition, pair by pair: A symmetric with 1 on the diagonal and
    ``affinity^beta`` for each pair within the radius, each column divided by its sum."""
    _, height, width = affinity.shape
    a = torch.eye(height * width, dtype=torch.float64)
    for k, (dy, dx) in enumerate(offsets):
        for y in range(height):
            for x in range(width):
                if 0 <= y + dy < height and 0 <= x + dx < width:
                    i, j = y * width + x, (y + dy) * width + x + dx
                    a[i, j] = a[j, i] = float(affinity[k, y, x].clamp_min(0)) ** beta
    return a / a.sum(dim=0, keepdim=True)


def test_a_seed_spreads_through_its_region_and_stops_at_a_wall():
    """A 12 x 20 grid cut by a full-height boundary at column 8. Each step of IRN's walk
    averages a pixel's neighbours, so a seed at the left end evens out over the left region, to
    its mean weighted by each pixel's count of neighbours within the radius (the walk's
    stationary weights), and nothing crosses the wall."""
    boundary = torch.zeros(1, 1, 12, 20)
    boundary[..., 8] = 1.0
    affinity, offsets = path_affinities(boundary, radius=5)
    seed = torch.zeros(1, 12, 20)
    seed[0, 5:7, 0:2] = 1.0
    walked = random_walk(seed, affinity[0], offsets, beta=10.0, exp_times=8)[0]
    assert float(walked[:, 8:].abs().max()) < 1e-6, "nothing reaches the wall or beyond"
    ys, xs = np.mgrid[0:12, 0:8]
    near = [
        ((ys - y) ** 2 + (xs - x) ** 2 < 25).sum()
        for y, x in zip(ys.ravel(), xs.ravel(), strict=True)
    ]
    weights = np.array(near, np.float64).reshape(12, 8)
    expected = (weights * seed[0, :, :8].numpy()).sum() / weights.sum()
    assert np.allclose(walked[:, :8].numpy(), expected, rtol=1e-3)


def test_half_disk_holds_each_pair_within_the_radius_once():
    from wsss.masks.random_walk import half_disk

    for radius in (2, 5):
        disk = {(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
                if dy * dy + dx * dx < radius * radius and (dy, dx) != (0, 0)}  # fmt: skip
        offsets = half_disk(radius)
        assert len(offsets) == len(set(offsets)) == len(disk) // 2
        assert set(offsets) | {(-dy, -dx) for dy, dx in offsets} == disk
    assert len(half_disk(5)) == 34  # 69 grid points lie within 5 of a pixel, itself included


def test_affinities_are_one_inside_a_clear_image_and_zero_across_its_border():
    affinity, offsets = path_affinities(torch.zeros(1, 1, 4, 5), radius=3)
    assert affinity.shape == (1, len(offsets), 4, 5)
    for k, (dy, dx) in enumerate(offsets):
        ys, xs = np.mgrid[0:4, 0:5]
        inside = (ys + dy >= 0) & (ys + dy < 4) & (xs + dx >= 0) & (xs + dx < 5)
        assert np.array_equal(affinity[0, k].numpy(), inside.astype(np.float32)), (dy, dx)
    wall = torch.zeros(1, 1, 3, 3)
    wall[..., 1, 1] = 0.7  # the centre: pairs whose line passes it keep 1 - 0.7
    affinity, offsets = path_affinities(wall, radius=3)
    assert float(affinity[0, offsets.index((1, 1)), 0, 0]) == pytest.approx(0.3)
    assert float(affinity[0, offsets.index((0, 1)), 0, 0]) == 1.0


def test_irn_settings_refuse_bad_values_and_a_missing_network():
    for bad in ({"radius": 1}, {"beta": 0.0}, {"exp_times": -1}, {"exp_times": 13}):
        with pytest.raises(ConfigError, match="refine.radius >= 2, refine.beta > 0"):
            IrnSettings(checkpoint="x.pt", **bad).validate()
    with pytest.raises(ConfigError, match="refine.backend must be auto, torch, openvino or "
                                          "onnxruntime, got 'tpu'"):  # fmt: skip
        IrnSettings(checkpoint="x.pt", backend="tpu").validate()
    IrnSettings(radius=2, exp_times=0).validate()
    IrnSettings(exp_times=12).validate()
    with pytest.raises(ConfigError, match=r"refine=irn needs refine.checkpoint=<affinity.pt>"):
        IrnSettings().boundary(np.zeros((8, 8, 3), np.uint8))
    empty = np.zeros((0, 8, 8), np.float32)
    assert IrnSettings().refine(np.zeros((8, 8, 3), np.uint8), empty, []) is empty


@pytest.fixture(scope="module")
def boundary_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    spec = ModelSpec("smallcnn", None, {"width": 4})
    classifier = create_classifier(spec, 6).eval()
    net = BoundaryNet(classifier, width=8)
    path = tmp_path_factory.mktemp("affinity") / "affinity.pt"
    save_boundary_net(path, net, spec, [f"c{i}" for i in range(6)], {"loss": 1.0})
    return path, classifier


def test_the_affinity_checkpoint_loads_weights_only(boundary_checkpoint, tmp_path):
    path, _ = boundary_checkpoint
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "wsss-affinity"
    net = load_boundary_net(str(path))
    assert net(torch.rand(1, 3, 30, 42)).shape == (1, 1, 8, 11)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_boundary_net(str(tmp_path / "bad.pt"))


def test_irn_propagation_never_leaves_the_images_classes(boundary_checkpoint):
    path, classifier = boundary_checkpoint
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), np.uint8)
    refine = IrnSettings(checkpoint=str(path), exp_times=4)
    predictor = MaskPredictor(classifier, ClassifierCam(scales=[1.0]), refine=refine)
    prediction = predictor.predict(image, [1, 4])
    assert prediction.maps.shape == (2, 40, 56) and prediction.maps.max() == pytest.approx(1)
    assert set(np.unique(prediction.label_map)) <= {0, 2, 5}
    # IRN's is 0.25; 0.40 was best on VOC's tune photos for every boundary network (README)
    assert predictor.threshold.bg_threshold == 0.40, "the walk's background score, not the CAM's"


def test_the_boundary_map_averages_the_image_and_its_mirror(boundary_checkpoint):
    path, _ = boundary_checkpoint
    image = np.random.default_rng(1).integers(0, 255, (32, 40, 3), np.uint8)
    net = load_boundary_net(str(path))
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
    with torch.inference_mode():
        plain, mirrored = net(x)[0, 0], net(x.flip(-1))[0, 0].flip(-1)
    both = IrnSettings(checkpoint=str(path), backend="torch").boundary(image)
    alone = IrnSettings(checkpoint=str(path), backend="torch", flip=False).boundary(image)
    assert torch.allclose(both, (plain + mirrored) / 2, atol=1e-5)
    assert torch.allclose(alone, plain, atol=1e-5)


def test_training_the_boundary_net_lowers_its_loss():
    """Seeds with a clear vertical class boundary: the loss falls as B learns it."""
    from wsss.engine.boundary_training import AffinitySettings, affinity_loss

    torch.manual_seed(0)
    net = BoundaryNet(create_classifier(ModelSpec("smallcnn", None, {"width": 4}), 2), width=8)
    images = torch.zeros(4, 3, 32, 32)
    images[:, 0, :, 16:] = 1.0  # red on the right
    labels = torch.zeros(4, 8, 8, dtype=torch.long)
    labels[:, :, 4:] = 1
    labels[:, :, 3] = 255  # uncertain along the edge
    settings = AffinitySettings(radius=4)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(30):
        loss, parts = affinity_loss(net.train()(images), labels, settings.radius)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0] and set(parts) == {"bg_pos", "fg_pos", "neg"}
    assert all(not p.requires_grad for p in net.classifier.parameters()), "backbone frozen"


def test_train_boundary_net_fine_tunes_the_backbone_only_when_asked(tiny_dataset, tmp_path):
    """affinity.backbone_lr_mult > 0 trains the backbone with the heads (its batch-norm
    statistics untouched), and the checkpoint carries the tuned backbone; 0 leaves it as is."""
    from wsss.data import load_split
    from wsss.engine.boundary_training import AffinitySettings, train_boundary_net

    split = load_split(tiny_dataset, "train.csv")
    split = type(split)(split.class_names, split.samples[:8], split.root, split.images_dir)

    def seeds(sample, size):
        labels = np.zeros(size, np.uint8)
        labels[:, size[1] // 2 :] = sample.labels[0] + 1
        return labels

    for mult in (0.0, 1.0):
        torch.manual_seed(0)
        classifier = create_classifier(ModelSpec("smallcnn", None, {"width": 4}), 6)
        before = {k: v.clone() for k, v in classifier.state_dict().items()}
        settings = AffinitySettings(epochs=1, batch_size=4, crop_size=32, radius=4,
                                    backbone_lr_mult=mult)  # fmt: skip
        net, _ = train_boundary_net(classifier, split, seeds, settings)
        after = net.classifier.state_dict()
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        if mult == 0:
            assert changed == []
        else:
            assert changed and all("running_" not in k for k in changed)
            save_boundary_net(tmp_path / "tuned.pt", net, ModelSpec("smallcnn", None, {"width": 4}),
                          [f"c{i}" for i in range(6)], {})  # fmt: skip
            loaded = load_boundary_net(str(tmp_path / "tuned.pt"))
            assert torch.equal(loaded.classifier.state_dict()[changed[0]], after[changed[0]])


def test_train_affinity_then_generate_with_irn_and_par(tmp_path):
    """The commands as a user runs them: CRF seeds of the train split, the boundary network,
    then pseudo-masks refined by IRN's random walk (and by PAR)."""
    cache = tmp_path / "cache"
    seeds, affinity = tmp_path / "seeds", tmp_path / "affinity"
    run("wsss.generate_masks", *GENERATE_TINY, "split=train", "crf=dense",
        f"hydra.run.dir={seeds}", cwd=tmp_path, cache=cache)  # fmt: skip
    run("wsss.train_affinity", *TINY, f"seeds={seeds}", "affinity.epochs=1",
        "affinity.crop_size=48", "affinity.batch_size=4", f"hydra.run.dir={affinity}",
        cwd=tmp_path, cache=cache)  # fmt: skip
    assert json.loads((affinity / "affinity_metrics.json").read_text())["loss"] > 0
    for refine in (["refine=irn", f"refine.checkpoint={affinity / 'affinity.pt'}"], ["refine=par"]):
        out = tmp_path / refine[0].split("=")[1]
        proc = run("wsss.generate_masks", *GENERATE_TINY, *refine, "crf=dense",
                   f"hydra.run.dir={out}", cwd=tmp_path, cache=cache)  # fmt: skip
        assert "mIoU of the masks (CRF, label mode)" in proc.stdout
        run_settings = json.loads((out / "run.json").read_text())["settings"]
        assert run_settings["refine"]["name"] == refine[0].split("=")[1]


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_the_boundary_map_from_an_inference_engine_is_pytorchs(boundary_checkpoint, backend):
    pytest.importorskip(backend)
    path, _ = boundary_checkpoint
    image = np.random.default_rng(7).integers(0, 255, (44, 60, 3), np.uint8)
    torch_map = IrnSettings(checkpoint=str(path), backend="torch").boundary(image)
    engine_map = IrnSettings(checkpoint=str(path), backend=backend).boundary(image)
    assert engine_map.shape == torch_map.shape == (11, 15)
    assert float((engine_map - torch_map).abs().max()) < 1e-4
    with pytest.raises(ConfigError, match="refine.backend must be"):
        IrnSettings(checkpoint=str(path), backend="tensorrt").validate()
