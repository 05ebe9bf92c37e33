"""Reading a split's images ahead of the model, in batches of equal size, with the bad-image
policy deciding what an unreadable image does (stop the run, or be left out)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import DataLoader, Dataset

from wsss.data.images import load_image
from wsss.data.screen import BadImages
from wsss.data.split import Sample
from wsss.errors import DataError


@dataclass
class LoadedImage:
    """A sample with its decoded uint8 (H, W, 3) image; ``index``: its position in the list
    the batches were made from. Has what ``MaskPredictor.stream`` reads: image, labels, name."""

    index: int
    sample: Sample
    image: np.ndarray

    @property
    def labels(self) -> tuple[int, ...]:
        return self.sample.labels

    @property
    def name(self):
        return self.sample.image_path


class _ImageReader(Dataset):
    """(index, image, error) triples, so DataLoader workers can read ahead of the model; an
    unreadable image comes back as (index, None, reason) for the policy to decide."""

    def __init__(self, samples: Sequence[Sample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return index, load_image(self.samples[index].image_path), None
        except DataError as exc:
            return index, None, str(exc)


def same_size_batches(
    samples: Sequence[Sample],
    batch_size: int,
    bad: BadImages | None = None,
    num_workers: int = 0,
) -> Iterator[list[LoadedImage]]:
    """Consecutive images of equal size, in batches of at most ``batch_size``, in order, read by
    ``num_workers`` DataLoader workers. An image that fails to decode goes to ``bad`` (default:
    an error naming it), after the batches before it."""
    bad = bad or BadImages()
    loader = DataLoader(
        _ImageReader(samples), batch_size=None, num_workers=num_workers, collate_fn=lambda x: x
    )
    batch: list[LoadedImage] = []
    for index, image, error in loader:
        if image is None:
            if batch and not bad.skip:  # finish the work before the error stops the run
                yield batch
                batch = []
            bad.record(samples[index].image_path, error)
            continue
        if batch and (len(batch) == batch_size or image.shape != batch[0].image.shape):
            yield batch
            batch = []
        batch.append(LoadedImage(index, samples[index], image))
    if batch:
        yield batch
