"""Why ReCAM's maps cover the photo: its second head, trained on frozen features, optimiser by
optimiser.

``cam=recam`` fine-tunes the whole classifier with ReCAM's second head; its backbone moves at a
tenth of the head's rate. This script holds the backbone fixed to look at the head alone: it
pools each present class's CAM-weighted feature (:func:`wsss.engine.recam_stage.class_features`)
of every ``fit`` photo once, trains the second head on those with ReCAM's loss and each
optimiser below for the steps of ReCAM's fine-tuning (4 epochs at batch 16), then scores the
maps each head gives on the ``tune`` photos (the product of the two heads' weights, as ReCAM
maps; CAM's own weights for comparison), one scale, the background threshold swept on the ground
truth (an upper bound, as the papers report CAMs).

- ``adamw``: AdamW at 3e-4 with the run's weight decay and cosine schedule (what ``cam=recam``
  first did);
- ``sgd``: SGD with momentum 0.9 at ReCAM's 0.0005, weight decay 1e-4, poly schedule (ReCAM's
  ``train_recam.py``); ``sgd_x10``: the same at ten times the rate (``cam.fit``'s default now).

It also prints each head's accuracy on its training pairs and the share of the product weights'
positive mass that comes from channels where both heads' weights are negative (a map that fires
wherever *other* classes' channels do).

    python scripts/diagnose_recam.py --lists <bench_voc out>/lists \\
        --checkpoint <bench_voc out>/cache/classifiers/<key>/checkpoint.pt
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from _results import save_result  # scripts/, beside this file
from bench_voc import DEFAULT_ROOT, dataset_overrides
from tqdm import tqdm

from wsss.cli.config import compose_config
from wsss.data import load_image
from wsss.engine.recam_stage import class_features, photo_cross_entropy
from wsss.engine.training import TrainSettings, lr_factor
from wsss.masks.predictor import at_working_size
from wsss.metrics.segmentation import ThresholdSweep
from wsss.models import load_checkpoint

HEADS = {  # name: (optimiser, learning rate, weight decay or None for the run's, schedule)
    "adamw": ("adamw", 3e-4, None, "cosine"),
    "sgd": ("sgd", 5e-4, 1e-4, "poly"),
    "sgd_x10": ("sgd", 5e-3, 1e-4, "poly"),
}


@torch.inference_mode()
def pooled_pairs(model, split, side: int):
    """(pairs, C) CAM-weighted features of each (photo, present class), their classes and
    photo indices, each photo shrunk to ``side`` on its long side (the training crops' scale)."""
    features, classes, photos = [], [], []
    weights = model.cam_weights.float()
    for i, sample in enumerate(tqdm(split.samples, desc="fit photos", unit="photo")):
        image = at_working_size(load_image(sample.image_path), side)
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        pooled = class_features(model.forward_features(x).float(), weights)[0]
        present = list(sample.labels)
        features.append(pooled[present])
        classes += present
        photos += [i] * len(present)
    return torch.cat(features), torch.tensor(classes), torch.tensor(photos)


def train_head(pairs, classes, photos, num_classes, name, steps, weight_decay, seed=0, lr=None):
    """The second head, trained on the pooled pairs in batches of 16 photos (``lr``: in place of
    the head's own)."""
    optimiser, head_lr, decay, schedule = HEADS[name]
    lr, decay = lr or head_lr, weight_decay if decay is None else decay
    torch.manual_seed(seed)
    head = torch.nn.Linear(pairs.shape[1], num_classes, bias=False)
    if optimiser == "sgd":
        opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=decay)
    else:
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=decay)
    n_photos = int(photos.max()) + 1
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_photos, generator=generator)
    recipe = TrainSettings(schedule=schedule, poly_power=0.9)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * lr_factor(recipe, step, steps, warmup=0)
        start = (step * 16) % n_photos
        if start < 16 and step:
            order = torch.randperm(n_photos, generator=generator)
        batch = order[start : start + 16]
        keep = torch.isin(photos, batch)
        remap = torch.full((n_photos,), -1, dtype=torch.long)
        remap[batch] = torch.arange(len(batch))
        logits = head(pairs[keep])
        loss = photo_cross_entropy(logits, classes[keep], remap[photos[keep]], len(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = (head(pairs).argmax(1) == classes).float().mean().item()
    return head.weight.detach(), accuracy


def negative_share(product: torch.Tensor, u: torch.Tensor, w: torch.Tensor) -> float:
    """Of the positive product weights' mass, the share from channels where both are negative."""
    positive = product.clamp(min=0)
    both = positive * ((u < 0) & (w < 0))
    return float(both.sum() / positive.sum().clamp(min=1e-12))


@torch.inference_mode()
def score_maps(model, split, class_weights: dict[str, torch.Tensor], max_side: int) -> dict:
    """Each weight set's maps on ``split``'s photos, the background threshold swept on GT."""
    sweeps = {name: ThresholdSweep(len(split.class_names) + 1) for name in class_weights}
    for sample in tqdm(split.samples, desc="tune photos", unit="photo"):
        full = load_image(sample.image_path)
        image = at_working_size(full, max_side)
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        features = model.forward_features(x).float()[0]
        truth = split.ground_truth(sample, full.shape[:2])
        classes = list(sample.labels)
        for name, weights in class_weights.items():
            maps = torch.relu(torch.einsum("kc,chw->khw", weights[classes], features))
            maps = F.interpolate(maps[None], size=full.shape[:2], mode="bilinear")[0]
            maps = maps / (maps.amax(dim=(1, 2), keepdim=True) + 1e-5)
            sweeps[name].update(maps.numpy(), classes, truth)
    return {name: sweep.summary() for name, sweep in sweeps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="the run's classifier")
    parser.add_argument("--lists", type=Path, required=True, help="bench_voc.py's lists folder")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the VOC2012 folder")
    parser.add_argument("--fit-side", type=int, default=256, help="the fit photos' long side")
    parser.add_argument("--limit", type=int, default=None, help="only the first N tune photos")
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    args = parser.parse_args()
    torch.manual_seed(0)
    lists = {p.stem: p for p in args.lists.glob("*.txt")}
    config = compose_config("generate_masks", [*dataset_overrides(args.root, lists),
                                               "preset=photos", "cam=recam"])  # fmt: skip
    model = load_checkpoint(args.checkpoint).model.eval()
    fit, tune = config.dataset.load("fit"), config.dataset.load("tune")
    if args.limit:
        tune = replace(tune, samples=tune.samples[: args.limit])
    pairs, classes, photos = pooled_pairs(model, fit, args.fit_side)
    steps = config.cam.fit.epochs * (len(fit) // 16)
    w = model.cam_weights.detach().float()
    weights, heads = {"cam": w}, {}
    for name in HEADS:
        u, accuracy = train_head(pairs, classes, photos, model.num_classes, name, steps,
                                 config.train.weight_decay)  # fmt: skip
        weights[name] = u * w
        heads[name] = {"accuracy": round(accuracy, 4), "norm": round(float(u.norm()), 4),
                       "both_negative_share": round(negative_share(u * w, u, w), 4)}  # fmt: skip
        print(
            f"{name}: accuracy {accuracy:.3f} on the fit pairs, |u| {u.norm():.3f}, positive "
            f"mass from both-negative channels {heads[name]['both_negative_share']:.3f}"
        )
    scores = score_maps(model, tune, weights, config.cam.max_side)
    for name, summary in scores.items():
        print(
            f"{name}: tune mIoU swept on GT {summary['best_miou']:.4f} at "
            f"{summary['best_threshold']:.2f}"
        )
    figures = {"fit_photos": len(fit), "tune_photos": len(tune), "steps": steps,
               "heads": heads, "maps": scores}  # fmt: skip
    print(f"figures: {save_result('diagnose_recam', figures, args.json)}")


if __name__ == "__main__":
    main()
