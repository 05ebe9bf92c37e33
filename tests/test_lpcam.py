"""LPCAM (wsss.cams.prototypes): the k-means, the maps and the fit against computations written
independently, the prototypes file, and cam=lpcam through generate_masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss.cams import compute_cams
from wsss.cams.prototypes import (
    PrototypeFitSettings,
    Prototypes,
    cosine_kmeans,
    fit_prototypes,
    prototype_maps,
)
from wsss.errors import CheckpointError, ConfigError
from wsss.models import ModelSpec, create_classifier


def _directions(count: int, channels: int, seed: int) -> torch.Tensor:
    """Unit vectors far apart: rows of a random orthogonal matrix."""
    q, _ = torch.linalg.qr(
        torch.randn(channels, channels, generator=torch.Generator().manual_seed(seed))
    )
    return q[:count]


def test_cosine_kmeans_finds_separated_groups_and_returns_their_raw_means():
    g = torch.Generator().manual_seed(0)
    axes = _directions(3, 8, 0)
    # three groups along three directions, each at its own scale (cosine ignores it)
    groups = [axes[i] * (i + 1) * 5 + 0.05 * torch.randn(40, 8, generator=g) for i in range(3)]
    x = torch.cat(groups)
    centres, assignment = cosine_kmeans(x, 3, seed=1)
    assert centres.shape == (3, 8) and assignment.shape == (120,)
    for i in range(3):  # every group lands in one cluster, each in another
        assert len(set(assignment[40 * i : 40 * (i + 1)].tolist())) == 1
    assert len(set(assignment.tolist())) == 3
    for k in range(3):  # each centre is the plain mean of its rows (LPCAM feeds it to the head)
        expected = x[assignment == k].double().mean(0)
        np.testing.assert_allclose(centres[k].double(), expected, atol=1e-5)
    again, _ = cosine_kmeans(x, 3, seed=1)
    assert torch.equal(centres, again), "seeded"


def test_cosine_kmeans_with_more_clusters_than_rows_and_bad_input():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    centres, assignment = cosine_kmeans(x, 12)
    assert len(centres) == 2 and sorted(assignment.tolist()) == [0, 1]
    with pytest.raises(ValueError, match="non-empty"):
        cosine_kmeans(torch.zeros(0, 4), 3)


def _naive_maps(features, weights, prototypes, targets):
    """Position by position, centre by centre, in float64 with numpy."""
    out = []
    f = features.double().numpy()
    for i, classes in enumerate(targets):
        maps = []
        for c in classes:
            fg = prototypes.foreground[c].double().numpy()
            ctx = prototypes.context[c].double().numpy()
            m = np.zeros(f.shape[2:])
            for y in range(f.shape[2]):
                for x in range(f.shape[3]):
                    v = f[i, :, y, x]
                    if len(fg) == 0:
                        m[y, x] = max(0.0, float(weights[c].double().numpy() @ v))
                        continue
                    cos = [v @ p / np.linalg.norm(v) / np.linalg.norm(p) for p in fg]
                    value = np.mean(cos)
                    if len(ctx):
                        value -= np.mean(
                            [v @ q / np.linalg.norm(v) / np.linalg.norm(q) for q in ctx]
                        )
                    m[y, x] = max(0.0, value)
            maps.append(m)
        out.append(np.stack(maps))
    return out


def test_prototype_maps_match_a_naive_computation():
    g = torch.Generator().manual_seed(2)
    features = torch.rand(2, 6, 4, 5, generator=g) + 0.01
    weights = torch.randn(3, 6, generator=g)
    prototypes = Prototypes(
        ["a", "b", "c"],
        foreground=[
            torch.rand(2, 6, generator=g),
            torch.rand(3, 6, generator=g),
            torch.zeros(0, 6),
        ],
        context=[torch.rand(4, 6, generator=g), torch.zeros(0, 6), torch.zeros(0, 6)],
    )
    targets = [[0, 2], [1]]
    maps = prototype_maps(features, weights, prototypes, targets)
    for got, expected in zip(
        maps, _naive_maps(features, weights, prototypes, targets), strict=True
    ):
        np.testing.assert_allclose(got.double().numpy(), expected, atol=1e-5)
    # class 2 has no foreground prototype: its map is the CAM
    assert torch.allclose(
        maps[0][1], torch.relu(torch.einsum("c,chw->hw", weights[2], features[0]))
    )


def test_fit_keeps_object_prototypes_and_co_occurring_context():
    """Two classes: a boat on water, a cat on a sofa. The head says 'boat' for the boat's
    feature and 'cat' for the cat's; water leans to boat (probability between the context
    thresholds), the sofa to neither. The fit must keep the boat's centre as its prototype and
    water as its context, and never a cat feature for the boat."""
    boat, water, cat, sofa = _directions(4, 8, 3) * 4
    weights = torch.stack([boat - cat, cat - boat]) / 4  # class 0 boat, class 1 cat
    weights[0] += water / 64  # water leans to boat a little (its CAM stays below 0.1)
    g = torch.Generator().manual_seed(4)

    def photo(obj, ground):  # 4x4: the object in the middle 2x2, its ground around it
        f = ground[:, None, None].repeat(1, 4, 4).clone()
        f[:, 1:3, 1:3] = obj[:, None, None]
        return f + 0.01 * torch.rand(8, 4, 4, generator=g)

    photos = [(photo(boat, water), [0])] * 6 + [(photo(cat, sofa), [1])] * 6
    fitted = fit_prototypes(iter(photos), weights, ["boat", "cat"],
                            PrototypeFitSettings(clusters=2, select_threshold=0.1))  # fmt: skip
    unit = torch.nn.functional.normalize
    assert len(fitted.foreground[0]) >= 1
    assert (unit(fitted.foreground[0], dim=1) @ unit(boat, dim=0) > 0.99).all()
    assert len(fitted.context[0]) >= 1
    assert (unit(fitted.context[0], dim=1) @ unit(water, dim=0) > 0.99).all()
    assert (unit(fitted.foreground[1], dim=1) @ unit(cat, dim=0) > 0.99).all()
    # the map of a boat photo: high on the boat, zero on the water
    maps = prototype_maps(photo(boat, water)[None], weights, fitted, [[0]])[0][0]
    assert maps[1:3, 1:3].min() > 0.5 and maps[0].max() == 0


def test_a_prototypes_file_round_trips_and_a_bad_one_is_named(tmp_path):
    prototypes = Prototypes(["a"], [torch.rand(2, 4)], [torch.zeros(0, 4)], {"clusters": 12})
    prototypes.save(tmp_path / "p.pt")
    loaded = Prototypes.load(tmp_path / "p.pt")
    assert loaded.class_names == ["a"] and torch.equal(
        loaded.foreground[0], prototypes.foreground[0]
    )
    assert loaded.settings == {"clusters": 12}
    (tmp_path / "bad.pt").write_bytes(b"not a file of prototypes")
    with pytest.raises(CheckpointError, match="bad.pt"):
        Prototypes.load(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="missing.pt"):
        Prototypes.load(tmp_path / "missing.pt")


def test_lpcam_through_compute_cams(tmp_path):
    torch.manual_seed(0)
    model = create_classifier(ModelSpec("smallcnn", None, {"width": 8}), 3).eval()
    images = torch.rand(2, 3, 32, 32)
    with pytest.raises(ConfigError, match="cam.prototypes"):
        compute_cams(model, images, [[0], [1]], method="lpcam")
    with torch.no_grad():
        features = model.forward_features(images)
    fitted = fit_prototypes(((features[i], [i]) for i in range(2)), model.cam_weights,
                            ["a", "b", "c"], PrototypeFitSettings(class_threshold=0.0))  # fmt: skip
    fitted.save(tmp_path / "p.pt")
    maps = compute_cams(
        model, images, [[0], [1, 2]], method="lpcam", prototypes=str(tmp_path / "p.pt")
    )
    expected = prototype_maps(features, model.cam_weights, fitted, [[0], [1, 2]])
    for got, want in zip(maps, expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    two = Prototypes(["a", "b"], fitted.foreground[:2], fitted.context[:2])
    two.save(tmp_path / "two.pt")
    with pytest.raises(ConfigError, match="prototypes of 2 classes for a classifier of 3"):
        compute_cams(model, images, [[0], [1]], method="lpcam", prototypes=str(tmp_path / "two.pt"))


def test_generate_masks_fits_the_prototypes_once_and_reuses_them(tmp_path):
    from commands import GENERATE_TINY, run

    args = [*GENERATE_TINY, "cam=lpcam", "cam.scales=[1.0]", "cam.fit.class_threshold=0.0"]
    run("wsss.generate_masks", *args, f"hydra.run.dir={tmp_path / 'a'}",
                cwd=tmp_path, cache=tmp_path / "cache")  # fmt: skip
    files = list((tmp_path / "cache" / "prototypes").glob("*/prototypes.pt"))
    log = (tmp_path / "a" / "generate_masks.log").read_text()
    assert len(files) == 1 and "fitting them on the 'train' split" in log
    fitted = Prototypes.load(files[0])
    assert len(fitted.foreground) == 6 and any(len(p) for p in fitted.foreground)
    assert (tmp_path / "a" / "summary.json").is_file()
    run("wsss.generate_masks", *args, f"hydra.run.dir={tmp_path / 'b'}",
                 cwd=tmp_path, cache=tmp_path / "cache")  # fmt: skip
    assert "reusing the LPCAM prototypes" in (tmp_path / "b" / "generate_masks.log").read_text()
    # the masks differ from CAM's: the maps are the prototypes', not the weights'
    run("wsss.generate_masks", *GENERATE_TINY, "cam.scales=[1.0]",
        f"hydra.run.dir={tmp_path / 'c'}", cwd=tmp_path, cache=tmp_path / "cache")  # fmt: skip
    a = sorted((tmp_path / "a" / "masks").glob("*.png"))
    c = sorted((tmp_path / "c" / "masks").glob("*.png"))
    assert [p.name for p in a] == [p.name for p in c]
    assert any(p.read_bytes() != q.read_bytes() for p, q in zip(a, c, strict=True))
