"""What a batch is made of: the pixels of its images (`ImageTable`: all of a run's in memory;
`ImageStream`: decoded per batch by a DataLoader's workers; `image_source` picks one) and its
padded token tensors (`collate`). The training loop and the evaluation's decoding share them."""
from __future__ import annotations

from pathlib import Path

import torch

from .samples import IGNORE, Encoded


def _open_rgb(root: Path, rels: list[str]) -> list:
    from PIL import Image

    pils = []
    for rel in rels:
        with Image.open(root / rel) as im:  # an absolute `rel` (a mix's image) ignores the root
            pils.append(im.convert("RGB"))
    return pils


class ImageTable:
    """All pixel tensors of the run, computed once by the model's image processor: the fast
    path for small image sets (the tiny default's are a few MB)."""

    def __init__(self, processor, root: str | Path, images: list[str]):
        self.index = {rel: i for i, rel in enumerate(sorted(set(images)))}
        pils = _open_rgb(Path(root), list(self.index))
        chunks = [processor.image_processor(pils[i:i + 512], return_tensors="pt")["pixel_values"]
                  for i in range(0, len(pils), 512)]
        self.pixels = torch.cat(chunks) if chunks else torch.empty(0)

    def __call__(self, rels: list[str]) -> torch.Tensor:
        return self.pixels[[self.index[r] for r in rels]]

    def batches(self, rel_lists: list[list[str]]):
        return (self(rels) for rels in rel_lists)


class _StepImages(torch.utils.data.Dataset):
    """Item i: the pixels of the i-th batch's images, decoded and processed in a worker."""

    def __init__(self, image_processor, root: Path, rel_lists: list[list[str]]):
        self.image_processor, self.root, self.rel_lists = image_processor, root, rel_lists

    def __len__(self) -> int:
        return len(self.rel_lists)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.image_processor(_open_rgb(self.root, self.rel_lists[i]), return_tensors="pt")["pixel_values"]


class ImageStream:
    """Pixels decoded and processed per batch by a torch DataLoader with `workers` processes
    (0: in this process), `prefetch` batches ahead: memory flat in the number of images."""

    def __init__(self, processor, root: str | Path, workers: int = 2, prefetch: int = 2):
        self.image_processor, self.root = processor.image_processor, Path(root)
        self.workers, self.prefetch = workers, prefetch

    def __call__(self, rels: list[str]) -> torch.Tensor:
        return _StepImages(self.image_processor, self.root, [rels])[0]

    def batches(self, rel_lists: list[list[str]]):
        loader = torch.utils.data.DataLoader(_StepImages(self.image_processor, self.root, rel_lists), batch_size=None,
                                             shuffle=False, num_workers=self.workers,
                                             prefetch_factor=self.prefetch if self.workers else None)
        return iter(loader)


def image_source(processor, root: str | Path, images: list[str], cache_max_mb: float, workers: int):
    """An `ImageTable` when the run's distinct images fit in `cache_max_mb` of pixels (the tiny
    default: fast, computed once), else an `ImageStream` (LLaVA's 665k images at 336 px: ~100 GB)."""
    unique = sorted(set(images))
    if unique:
        one = ImageStream(processor, root, 0)([unique[0]])
        if one.element_size() * one.numel() * len(unique) <= cache_max_mb * 2**20:
            return ImageTable(processor, root, images)
    return ImageStream(processor, root, workers)


def collate(samples: list[Encoded], pad_id: int, pad_left: bool = False):
    width = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    targets = torch.zeros((len(samples), width), dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s.input_ids)
        sl = slice(width - n, width) if pad_left else slice(0, n)
        ids[i, sl] = torch.tensor(s.input_ids)
        labels[i, sl] = torch.tensor(s.labels)
        targets[i, sl] = torch.tensor(s.targets)
        mask[i, sl] = 1
    return ids, labels, targets, mask
