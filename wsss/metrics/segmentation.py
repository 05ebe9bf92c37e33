"""Segmentation metrics: confusion-matrix mIoU of label maps, and a background-threshold sweep."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wsss.masks.threshold import IGNORE, cam_to_label_map


class ConfusionMatrix:
    """Pixel confusion matrix over background + K classes (rows: ground truth, cols: prediction).

    Ground-truth pixels equal to 255 are ignored. Predicted 255 ("uncertain") pixels are counted
    separately: ``miou`` scores them as background (every pixel counts), ``miou_confident``
    leaves them out (quality of the confident pixels only).
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes  # including background
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.uncertain_by_gt = np.zeros(num_classes, dtype=np.int64)

    def update(self, prediction: np.ndarray, ground_truth: np.ndarray) -> None:
        if prediction.shape != ground_truth.shape:
            raise ValueError(f"shape mismatch: {prediction.shape} vs {ground_truth.shape}")
        gt = ground_truth.ravel().astype(np.int64)
        pred = prediction.ravel().astype(np.int64)
        valid = gt != IGNORE
        if np.any(gt[valid] >= self.num_classes):
            raise ValueError(f"ground truth has class ids >= {self.num_classes}")
        uncertain = valid & (pred == IGNORE)
        self.uncertain_by_gt += np.bincount(gt[uncertain], minlength=self.num_classes)
        keep = valid & ~uncertain
        if np.any(pred[keep] >= self.num_classes):
            raise ValueError(f"prediction has class ids >= {self.num_classes}")
        idx = gt[keep] * self.num_classes + pred[keep]
        self.matrix += np.bincount(idx, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def merge(self, other: ConfusionMatrix) -> None:
        self.matrix += other.matrix
        self.uncertain_by_gt += other.uncertain_by_gt

    def to_sparse(self) -> dict:
        """The non-zero counts as JSON-ready lists (small for one image: few classes meet)."""
        rows, cols = np.nonzero(self.matrix)
        (uncertain,) = np.nonzero(self.uncertain_by_gt)
        return {
            "matrix": [
                [int(r), int(c), int(self.matrix[r, c])] for r, c in zip(rows, cols, strict=True)
            ],
            "uncertain": [[int(g), int(self.uncertain_by_gt[g])] for g in uncertain],
        }

    def add_sparse(self, counts: dict) -> None:
        """Add counts written by :meth:`to_sparse`."""
        for r, c, n in counts["matrix"]:
            self.matrix[r, c] += n
        for g, n in counts["uncertain"]:
            self.uncertain_by_gt[g] += n

    @staticmethod
    def _iou(matrix: np.ndarray) -> np.ndarray:
        tp = np.diag(matrix).astype(np.float64)
        union = matrix.sum(0) + matrix.sum(1) - np.diag(matrix)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def _with_uncertain_as_background(self) -> np.ndarray:
        m = self.matrix.copy()
        m[:, 0] += self.uncertain_by_gt
        return m

    @property
    def iou(self) -> np.ndarray:
        """Per-class IoU with uncertain pixels scored as background (NaN: class never seen)."""
        return self._iou(self._with_uncertain_as_background())

    @property
    def miou(self) -> float:
        return float(np.nanmean(self.iou))

    @property
    def miou_confident(self) -> float:
        return float(np.nanmean(self._iou(self.matrix)))

    @property
    def foreground_precision_recall(self) -> tuple[float, float]:
        """Object (any class) against background, uncertain pixels as background: the share of
        pixels marked as objects that are objects, and of object pixels marked as objects."""
        m = self._with_uncertain_as_background()
        both = float(m[1:, 1:].sum())
        marked, objects = float(m[:, 1:].sum()), float(m[1:, :].sum())
        return (
            both / marked if marked else float("nan"),
            both / objects if objects else float("nan"),
        )

    @property
    def uncertain_fraction(self) -> float:
        total = self.matrix.sum() + self.uncertain_by_gt.sum()
        return float(self.uncertain_by_gt.sum() / total) if total else 0.0

    def summary(self, class_names: Sequence[str]) -> dict:
        """A JSON-ready dict: overall figures plus per-class IoU, precision and recall."""
        m = self._with_uncertain_as_background()
        tp = np.diag(m).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(m.sum(0) > 0, tp / m.sum(0), np.nan)
            recall = np.where(m.sum(1) > 0, tp / m.sum(1), np.nan)
        names = ["background", *class_names]
        iou = self.iou

        def num(x: float) -> float | None:
            return None if np.isnan(x) else round(float(x), 4)

        fg_precision, fg_recall = self.foreground_precision_recall
        return {
            "miou": num(self.miou),
            "miou_confident_pixels": num(self.miou_confident),
            "foreground": {"precision": num(fg_precision), "recall": num(fg_recall)},
            "uncertain_pixels": int(self.uncertain_by_gt.sum()),
            "uncertain_pixel_fraction": round(self.uncertain_fraction, 4),
            "pixels": int(m.sum()),
            "per_class": {
                n: {"iou": num(iou[i]), "precision": num(precision[i]), "recall": num(recall[i])}
                for i, n in enumerate(names)
            },
        }


DEFAULT_SWEEP = tuple(round(0.05 * i, 2) for i in range(1, 13))  # 0.05 .. 0.60


class ThresholdSweep:
    """mIoU of the plain threshold rule for a range of background thresholds, accumulated
    image by image (one confusion matrix per threshold, so memory does not grow with data)."""

    def __init__(self, num_classes: int, thresholds: Sequence[float] = DEFAULT_SWEEP):
        self.thresholds = tuple(float(t) for t in thresholds)
        self.matrices = [ConfusionMatrix(num_classes) for _ in self.thresholds]

    def update(self, cams: np.ndarray, classes: Sequence[int], ground_truth: np.ndarray) -> None:
        for t, cm in zip(self.thresholds, self.matrices, strict=True):
            cm.update(cam_to_label_map(cams, classes, t), ground_truth)

    def to_sparse(self) -> list[dict]:
        return [cm.to_sparse() for cm in self.matrices]

    def add_sparse(self, counts: list[dict]) -> None:
        for cm, c in zip(self.matrices, counts, strict=True):
            cm.add_sparse(c)

    @property
    def mious(self) -> list[float]:
        return [cm.miou for cm in self.matrices]

    @property
    def best(self) -> tuple[float, float]:
        """(threshold, mIoU) of the best threshold: tuned on ground truth, an upper bound."""
        i = int(np.nanargmax(self.mious))
        return self.thresholds[i], self.mious[i]

    def summary(self) -> dict:
        """A JSON-ready dict of the sweep; the best threshold is labelled as tuned on GT."""
        best_t, best_miou = self.best
        return {
            "note": "best threshold is tuned on the ground truth: an upper bound, not a result",
            "thresholds": list(self.thresholds),
            "miou": [round(m, 4) for m in self.mious],
            "best_threshold": best_t,
            "best_miou": round(best_miou, 4),
        }

    def figure(self, fixed_threshold: float | None = None):
        """The sweep as a matplotlib figure: mIoU against the background threshold, the best
        threshold (green) and, when given, the one the run used (red)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
        ax.plot(self.thresholds, self.mious, marker="o")
        best_t, best_m = self.best
        ax.axvline(best_t, color="tab:green", ls="--", label=f"best {best_t:.2f}: {best_m:.3f}")
        if fixed_threshold is not None:
            label = f"used {fixed_threshold:.2f}"
            ax.axvline(fixed_threshold, color="tab:red", ls=":", label=label)
        ax.set_xlabel("background threshold")
        ax.set_ylabel("mIoU")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        return fig

    def save_plot(self, path, fixed_threshold: float | None = None) -> None:
        """:meth:`figure` as a PNG at ``path``."""
        import matplotlib.pyplot as plt

        fig = self.figure(fixed_threshold)
        fig.savefig(path, format="png")
        plt.close(fig)
