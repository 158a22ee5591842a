"""COCO-style detection data: an instances json plus an images directory, read from disk.

Layout under ``data_root`` (real COCO 2017, or the generated Fashion-MNIST canvases)::

    annotations/instances_val2017.json   (or instances_val.json)
    val2017/                             (or val/)   the evaluation images
    annotations/instances_train2017.json (optional; or instances_train.json)
    train2017/                           (optional; or train/)

Evaluation uses every validation image in ascending image-id order. Calibration and
training images come from the train split when its images directory exists (boxes from its
json when there is one); otherwise a fixed hold-out of every 10th validation image (by
id order) serves calibration and is excluded from evaluation, as for ImageNet
(``tasks/data/imagenet.py``), so the two never share an image.

Nothing is downloaded; a missing or malformed file raises
:class:`~snnbench.tasks.base.DataNotFoundError` naming what was expected.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from snnbench.tasks.base import DataNotFoundError

log = logging.getLogger(__name__)

#: split names tried in order: the COCO 2017 names, then the plain ones the canvases use
VAL_NAMES = ("val2017", "val")
TRAIN_NAMES = ("train2017", "train")
HOLDOUT_EVERY = 10
LAYOUT_HELP = ("expected <root>/annotations/instances_val2017.json with images in <root>/val2017/ "
               "(or instances_val.json with val/); pass --data-root pointing at that root")


class CocoFormatError(DataNotFoundError):
    """An annotation file exists but is not a valid COCO instances json."""


@dataclass(frozen=True)
class CocoImage:
    """One image of a split: its COCO id, file and size as recorded in the json."""

    id: int
    path: Path
    width: int
    height: int


@dataclass
class CocoSplit:
    """The images of one split, in ascending id order, and the parsed json (if any)."""

    name: str
    images_dir: Path
    images: list[CocoImage]
    annotation_file: Path | None = None
    data: dict[str, Any] | None = None

    def boxes(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per image id, ``(boxes [N, 4] xyxy float32, category ids [N] int64)`` without crowds."""
        if self.data is None:
            raise DataNotFoundError(f"split {self.name} has no annotation file, so no boxes to train on")
        per_image: dict[int, list] = {img.id: [] for img in self.images}
        for ann in self.data["annotations"]:
            if ann.get("iscrowd", 0) or ann["image_id"] not in per_image:
                continue
            x, y, w, h = ann["bbox"]
            if w > 0 and h > 0:
                per_image[ann["image_id"]].append((x, y, x + w, y + h, ann["category_id"]))
        out = {}
        for image_id, rows in per_image.items():
            arr = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
            out[image_id] = (arr[:, :4].astype(np.float32), arr[:, 4].astype(np.int64))
        return out


@dataclass
class CocoData:
    """Evaluation and calibration images of a COCO-layout root (disjoint by construction)."""

    root: Path
    evaluation: CocoSplit
    calibration: CocoSplit
    calibration_split: str
    categories: list[dict[str, Any]] = field(default_factory=list)

    def ground_truth(self):
        """A pycocotools ``COCO`` of the validation json (built silently from the parsed dict)."""
        return coco_from_dict(self.evaluation.data)


def coco_from_dict(data: dict[str, Any]):
    """A pycocotools ``COCO`` object from an already parsed instances dict, without printing."""
    try:
        from pycocotools.coco import COCO
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("COCO evaluation needs pycocotools: pip install pycocotools") from err
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_instances(path: Path) -> dict[str, Any]:
    """Read and validate a COCO instances json (images, annotations, categories)."""
    if not path.is_file():
        raise DataNotFoundError(f"COCO annotation file {path} does not exist; {LAYOUT_HELP}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CocoFormatError(f"{path} is not valid JSON ({err}); expected a COCO instances file") from err
    if not isinstance(data, dict):
        raise CocoFormatError(f"{path} holds a {type(data).__name__}, not a COCO instances object")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise CocoFormatError(f"{path} lacks the COCO list(s) {missing}; a COCO instances json has "
                              "'images', 'annotations' and 'categories'")
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not {"id", "file_name"} <= img.keys():
            raise CocoFormatError(f"{path}: images[{i}] needs 'id' and 'file_name'; got {str(img)[:120]}")
    image_ids = {img["id"] for img in data["images"]}
    category_ids = {c.get("id") for c in data["categories"] if isinstance(c, dict)}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not {"image_id", "category_id", "bbox"} <= ann.keys():
            raise CocoFormatError(f"{path}: annotations[{i}] needs 'image_id', 'category_id' and 'bbox'; "
                                  f"got {str(ann)[:120]}")
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise CocoFormatError(f"{path}: annotations[{i}].bbox must be [x, y, w, h]; got {bbox!r}")
        if ann["image_id"] not in image_ids:
            raise CocoFormatError(f"{path}: annotations[{i}] refers to image_id {ann['image_id']}, "
                                  "which is not in 'images'")
        if ann["category_id"] not in category_ids:
            raise CocoFormatError(f"{path}: annotations[{i}] has category_id {ann['category_id']}, "
                                  "which is not in 'categories'")
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(bbox[2] * bbox[3]))
        ann.setdefault("id", i + 1)
    return data


def _first_existing(root: Path, names: Sequence[str]) -> tuple[str, Path] | None:
    for name in names:
        if (root / name).is_dir():
            return name, root / name
    return None


def _split_from_json(name: str, images_dir: Path, json_path: Path) -> CocoSplit:
    data = load_instances(json_path)
    images = [CocoImage(id=int(img["id"]), path=images_dir / img["file_name"], width=int(img.get("width", 0)),
                        height=int(img.get("height", 0))) for img in data["images"]]
    images.sort(key=lambda im: im.id)
    if not images:
        raise CocoFormatError(f"{json_path} lists no images")
    if not images[0].path.is_file():
        raise DataNotFoundError(f"image {images[0].path} (first of {json_path.name}) does not exist; "
                                f"the images of {json_path.name} belong in {images_dir}/")
    return CocoSplit(name=name, images_dir=images_dir, images=images, annotation_file=json_path, data=data)


def _split_from_dir(name: str, images_dir: Path) -> CocoSplit:
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    if not files:
        raise DataNotFoundError(f"{images_dir} holds no .jpg/.png images")
    return CocoSplit(name=name, images_dir=images_dir,
                     images=[CocoImage(id=i, path=p, width=0, height=0) for i, p in enumerate(files)])


def load_coco(data_root: str | Path | None) -> CocoData:
    """Resolve the layout under ``data_root`` and read the validation (and train) split."""
    if not data_root:
        raise DataNotFoundError(f"the coco task needs --data-root DIR: {LAYOUT_HELP}")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"COCO root {root} does not exist; {LAYOUT_HELP}")
    val = None
    for name in VAL_NAMES:
        json_path = root / "annotations" / f"instances_{name}.json"
        if json_path.is_file():
            if not (root / name).is_dir():
                raise DataNotFoundError(f"found {json_path} but no image directory {root / name}/; {LAYOUT_HELP}")
            val = _split_from_json(name, root / name, json_path)
            break
    if val is None:
        looked = ", ".join(str(root / "annotations" / f"instances_{n}.json") for n in VAL_NAMES)
        raise DataNotFoundError(f"no COCO validation annotations under {root} (looked for {looked}); {LAYOUT_HELP}")
    found = _first_existing(root, TRAIN_NAMES)
    if found is not None:
        name, images_dir = found
        json_path = root / "annotations" / f"instances_{name}.json"
        train = _split_from_json(name, images_dir, json_path) if json_path.is_file() else _split_from_dir(name,
                                                                                                         images_dir)
        return CocoData(root=root, evaluation=val, calibration=train, calibration_split=name,
                        categories=val.data["categories"])
    held = [im for i, im in enumerate(val.images) if i % HOLDOUT_EVERY == 0]
    rest = [im for i, im in enumerate(val.images) if i % HOLDOUT_EVERY != 0]
    if not rest:
        raise DataNotFoundError(f"{val.annotation_file} has too few images to hold out a calibration set; "
                                f"add a {TRAIN_NAMES[0]}/ directory")
    evaluation = CocoSplit(name=val.name, images_dir=val.images_dir, images=rest, annotation_file=val.annotation_file,
                           data=val.data)
    calibration = CocoSplit(name=f"{val.name}-holdout", images_dir=val.images_dir, images=held,
                            annotation_file=val.annotation_file, data=val.data)
    return CocoData(root=root, evaluation=evaluation, calibration=calibration,
                    calibration_split=f"{val.name} every {HOLDOUT_EVERY}th image (excluded from evaluation)",
                    categories=val.data["categories"])


def read_image_uint8(path: Path) -> torch.Tensor:
    """An image file as uint8 ``[C, H, W]``: C = 1 for grayscale files, else 3 (RGB)."""
    try:
        with Image.open(path) as img:
            gray = img.mode in ("L", "I;16", "I", "1")
            array = np.asarray(img.convert("L" if gray else "RGB"), dtype=np.uint8)
    except FileNotFoundError as err:
        raise DataNotFoundError(f"image {path} does not exist") from err
    except OSError as err:
        raise CocoFormatError(f"image {path} cannot be read: {err}") from err
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def to_rgb_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 ``[1 or 3, H, W]`` -> float32 RGB ``[3, H, W]`` in [0, 1] (grayscale replicated)."""
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return image.float().div(255.0)


def read_image(path: Path) -> torch.Tensor:
    """An image file as a float32 RGB tensor ``[3, H, W]`` in [0, 1] (grayscale is replicated)."""
    return to_rgb_float(read_image_uint8(path))


class CocoImages(torch.utils.data.Dataset):
    """``(image [3, H, W] in [0, 1], image id)`` for a list of :class:`CocoImage`."""

    def __init__(self, images: Sequence[CocoImage]) -> None:
        self.images = list(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        item = self.images[i]
        return read_image(item.path), item.id


def collate_lists(batch: list[tuple[torch.Tensor, int]]) -> tuple[list[torch.Tensor], list[int]]:
    """Images stay a list (sizes differ); ids become a list of ints."""
    return [b[0] for b in batch], [int(b[1]) for b in batch]


def image_batches(images: Sequence[CocoImage], batch_size: int, num_workers: int = 0
                  ) -> Iterator[tuple[list[torch.Tensor], list[int]]]:
    """``(list of image tensors, list of image ids)`` batches in the given order."""
    loader = torch.utils.data.DataLoader(CocoImages(images), batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, collate_fn=collate_lists)
    yield from loader
