"""CIFAR-10 / CIFAR-100 from the official python-pickle layout (never downloaded).

Expected under ``data_root`` (torchvision's layout): ``cifar-10-batches-py/`` with
``data_batch_1..5``, ``test_batch`` and ``batches.meta``; or ``cifar-100-python/`` with
``train``, ``test`` and ``meta``. The pickles are read with a restricted unpickler that
admits only plain containers and numpy arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from snnbench.tasks.base import DataNotFoundError
from snnbench.tasks.data.arrays import ImageArrays

#: per-channel mean/std of the CIFAR training images (the usual constants)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

_LAYOUT = {
    10: dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
             meta="batches.meta", label_key="labels", names_key="label_names"),
    100: dict(folder="cifar-100-python", train=["train"], test=["test"], meta="meta",
              label_key="fine_labels", names_key="fine_label_names"),
}
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle")


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as err:
        raise DataNotFoundError(f"cannot read CIFAR file {path}: {err}") from err
    if not isinstance(obj, dict):
        raise DataNotFoundError(f"CIFAR file {path} does not hold a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def load_split(num_classes: int, split: str, data_root: str | None) -> ImageArrays:
    """Load CIFAR-``num_classes`` ``split`` ("train"/"test") as uint8 ``[N, 3, 32, 32]``."""
    if num_classes not in _LAYOUT:
        raise ValueError("CIFAR has 10 or 100 classes")
    if split not in ("train", "test"):
        raise ValueError(f"unknown CIFAR split {split!r}; valid: train, test")
    lay = _LAYOUT[num_classes]
    if not data_root:
        raise DataNotFoundError(f"CIFAR-{num_classes} needs --data-root DIR containing {lay['folder']}/ "
                                "(the python version from https://www.cs.toronto.edu/~kriz/cifar.html)")
    root = Path(data_root).expanduser()
    folder = root / lay["folder"] if (root / lay["folder"]).is_dir() else root
    files = [folder / name for name in lay[split]] + [folder / lay["meta"]]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataNotFoundError(f"CIFAR-{num_classes} files missing: {', '.join(missing)}. Expected the "
                                f"python layout {lay['folder']}/ under --data-root {root}")
    images, labels = [], []
    for f in files[:-1]:
        batch = _load_pickle(f)
        if "data" not in batch or lay["label_key"] not in batch:
            raise DataNotFoundError(f"CIFAR file {f} lacks 'data' or '{lay['label_key']}'")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DataNotFoundError(f"CIFAR file {f}: data has shape {data.shape}, expected [N, 3072]")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[lay["label_key"]], dtype=np.int64))
    meta = _load_pickle(files[-1])
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(lay["names_key"], [])]
    if len(names) != num_classes:
        raise DataNotFoundError(f"CIFAR meta file {files[-1]} lists {len(names)} class names, expected {num_classes}")
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if num_classes == 10 else (CIFAR100_MEAN, CIFAR100_STD)
    return ImageArrays(images=np.concatenate(images), labels=np.concatenate(labels), mean=mean, std=std,
                       classes=tuple(names))
