"""Canvases of real Fashion-MNIST objects for the embedded detection and segmentation tasks.

Each canvas is a black ``size x size`` image holding 1-4 real Fashion-MNIST items resized
to 24-64 px and pasted with ``max`` at random positions (docs/datasets-and-weights.md §2).
Labels come exactly from the pasted pixels:

* a box per object: the tight box of its pixels above ``box_threshold`` (COCO ``[x, y, w, h]``,
  pixel-inclusive), its area the number of those pixels;
* a VOC-style class mask: 0 background, 1..10 the class of the object whose pixels are
  above ``mask_threshold`` (later objects on top).

Training canvases are built from the Fashion-MNIST *train* split and validation canvases
from the *test* split, with fixed seeds, so the detection/segmentation splits inherit the
disjointness of the source splits. The generator writes ordinary files (PNG images, a COCO
instances json, the VOC 2012 segmentation layout) that the tasks then read with the same
code as real COCO or VOC.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1"


@dataclass(frozen=True)
class CanvasSpec:
    """Geometry of the generated canvases."""

    size: int = 128
    min_objects: int = 1
    max_objects: int = 4
    min_scale: int = 24
    max_scale: int = 64
    box_threshold: float = 0.05
    mask_threshold: float = 0.1


@dataclass
class PlacedObject:
    category: int                 # 1-based class id
    bbox: tuple[int, int, int, int]  # x, y, w, h
    area: int


@dataclass
class Canvas:
    image: np.ndarray             # uint8 [size, size]
    mask: np.ndarray              # uint8 [size, size], 0 = background, k = class k
    objects: list[PlacedObject] = field(default_factory=list)


def _resize(obj: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(obj).resize((side, side), Image.BILINEAR), dtype=np.uint8)


def generate_canvases(images: np.ndarray, labels: np.ndarray, count: int, seed: int,
                      spec: CanvasSpec = CanvasSpec()) -> list[Canvas]:
    """``count`` canvases from source ``images`` ([N, 28, 28] uint8) and 0-based ``labels``."""
    if images.ndim == 4:
        images = images[:, 0]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        canvas = np.zeros((spec.size, spec.size), dtype=np.uint8)
        mask = np.zeros_like(canvas)
        objects = []
        for _ in range(int(rng.integers(spec.min_objects, spec.max_objects + 1))):
            idx = int(rng.integers(len(images)))
            side = int(rng.integers(spec.min_scale, spec.max_scale + 1))
            obj = _resize(images[idx], side)
            x, y = (int(v) for v in rng.integers(0, spec.size - side + 1, size=2))
            region = canvas[y:y + side, x:x + side]
            np.maximum(region, obj, out=region)
            fg = obj > spec.box_threshold * 255
            if not fg.any():
                continue
            rows, cols = np.nonzero(fg)
            bbox = (x + int(cols.min()), y + int(rows.min()), int(cols.max() - cols.min() + 1),
                    int(rows.max() - rows.min() + 1))
            category = int(labels[idx]) + 1
            mask[y:y + side, x:x + side][obj > spec.mask_threshold * 255] = category
            objects.append(PlacedObject(category=category, bbox=bbox, area=int(fg.sum())))
        out.append(Canvas(image=canvas, mask=mask, objects=objects))
    return out


def coco_categories(names: Sequence[str]) -> list[dict]:
    return [{"id": i + 1, "name": name, "supercategory": "fashion"} for i, name in enumerate(names)]


def write_coco(canvases: Iterable[Canvas], images_dir: Path, json_path: Path, names: Sequence[str],
               prefix: str) -> int:
    """Write PNG images and a COCO instances json; returns the number of images."""
    images_dir.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ann_id = 1
    for i, canvas in enumerate(canvases, start=1):
        file_name = f"{prefix}_{i:06d}.png"
        Image.fromarray(canvas.image).save(images_dir / file_name)
        h, w = canvas.image.shape
        images.append({"id": i, "file_name": file_name, "height": h, "width": w})
        for obj in canvas.objects:
            annotations.append({"id": ann_id, "image_id": i, "category_id": obj.category, "bbox": list(obj.bbox),
                                "area": obj.area, "iscrowd": 0})
            ann_id += 1
    data = {"info": {"description": "snnbench Fashion-MNIST canvases", "version": GENERATOR_VERSION},
            "images": images, "annotations": annotations, "categories": coco_categories(names)}
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, json_path)
    return len(images)


#: VOC's colour map for the first 21 labels (index -> RGB), so masks look like VOC's
def voc_palette() -> list[int]:
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def write_voc(canvases: Iterable[Canvas], root: Path, split: str, prefix: str) -> int:
    """Write the VOC 2012 segmentation layout (JPEGImages as PNG, SegmentationClass, ImageSets)."""
    images_dir, masks_dir, sets_dir = root / "JPEGImages", root / "SegmentationClass", root / "ImageSets" / "Segmentation"
    for d in (images_dir, masks_dir, sets_dir):
        d.mkdir(parents=True, exist_ok=True)
    ids = []
    palette = voc_palette()
    for i, canvas in enumerate(canvases, start=1):
        name = f"{prefix}_{i:06d}"
        Image.fromarray(canvas.image).save(images_dir / f"{name}.png")
        mask = Image.fromarray(canvas.mask, mode="P")
        mask.putpalette(palette)
        mask.save(masks_dir / f"{name}.png")
        ids.append(name)
    (sets_dir / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return len(ids)


@dataclass(frozen=True)
class CanvasDataset:
    """What :func:`ensure_canvases` built: counts, seeds and the geometry (the manifest)."""

    kind: str                      # "coco" or "voc"
    train_count: int
    val_count: int
    train_seed: int = 1
    val_seed: int = 2
    spec: CanvasSpec = CanvasSpec()
    version: str = GENERATOR_VERSION

    def manifest(self) -> dict:
        return {**asdict(self), "spec": asdict(self.spec)}


def ensure_canvases(root: Path, dataset: CanvasDataset, fmnist_root: str | None = None) -> Path:
    """Generate the canvas dataset under ``root`` unless a matching manifest is there.

    Returns ``root``. The layout is COCO (``annotations/instances_{train,val}.json``,
    ``train/``, ``val/``) or VOC (``JPEGImages/``, ``SegmentationClass/``,
    ``ImageSets/Segmentation/{train,val}.txt``). Generation holds an inter-process lock
    (``.<root name>.lock`` beside ``root``), so parallel cells write the files once.
    """
    from snnbench.common.filelock import file_lock

    root = Path(root)
    with file_lock(root.parent / f".{root.name}.lock"):
        return _ensure_canvases_unlocked(root, dataset, fmnist_root)


def _ensure_canvases_unlocked(root: Path, dataset: CanvasDataset, fmnist_root: str | None) -> Path:
    from snnbench.tasks.data import fashion_mnist

    manifest_path = root / "manifest.json"
    wanted = dataset.manifest()
    if manifest_path.exists():
        try:
            if json.loads(manifest_path.read_text()) == wanted:
                return root
        except ValueError:
            pass
        log.warning("regenerating canvases in %s (manifest differs)", root)
    root.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)
    for split, count, seed in (("train", dataset.train_count, dataset.train_seed),
                               ("val", dataset.val_count, dataset.val_seed)):
        source = fashion_mnist.load_split("train" if split == "train" else "test", fmnist_root)
        canvases = generate_canvases(source.images, source.labels, count, seed, dataset.spec)
        if dataset.kind == "coco":
            write_coco(canvases, root / split, root / "annotations" / f"instances_{split}.json",
                       fashion_mnist.CLASSES, prefix=split)
        else:
            write_voc(canvases, root, split, prefix=split)
    manifest_path.write_text(json.dumps(wanted, indent=2))
    return root


def default_data_dir(name: str) -> Path:
    """Where generated datasets live: ``$SNNBENCH_DATA_DIR`` or ``~/.cache/snnbench/data``."""
    base = os.environ.get("SNNBENCH_DATA_DIR")
    if base:
        return Path(base).expanduser() / name
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "snnbench" / "data" / name
