"""Every dataset reader on tiny trees the tests create, and its error messages."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from snnbench.tasks.base import DataNotFoundError
from snnbench.tasks.classification import CIFAR10Task, CIFAR100Task, DigitsTask, FashionMNISTTask, ImageNetTask
from snnbench.tasks.data import cifar, digits, fashion_mnist, imagenet
from snnbench.tasks.data.idx import IdxFormatError, read_idx


def write_idx(path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_fmnist(root, n_train=12, n_test=6, gz=True):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)), gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz)


@pytest.mark.parametrize("layout,gz", [("", True), ("FashionMNIST/raw", False), ("FashionMNIST/raw", True)])
def test_fashion_mnist_reads_debian_and_torchvision_layouts(tmp_path, layout, gz):
    make_fmnist(tmp_path / layout if layout else tmp_path, gz=gz)
    train = fashion_mnist.load_split("train", tmp_path)
    test = fashion_mnist.load_split("test", tmp_path)
    assert train.images.shape == (12, 1, 28, 28) and test.images.shape == (6, 1, 28, 28)
    assert list(test.labels) == [0, 1, 2, 3, 4, 5]
    x = test.tensor(slice(0, 2))
    assert x.dtype == torch.float32 and x.shape == (2, 1, 28, 28)


def test_fashion_mnist_missing_names_paths_and_remedy(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        fashion_mnist.load_split("train", tmp_path / "nowhere")
    msg = str(err.value)
    assert "nowhere" in msg and "train-images-idx3-ubyte" in msg and "apt-get install dataset-fashion-mnist" in msg


def test_idx_rejects_malformed_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(IdxFormatError, match="bad magic"):
        read_idx(bad)
    truncated = tmp_path / "trunc"
    truncated.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(IdxFormatError, match="expected 10"):
        read_idx(truncated)


def test_real_fashion_mnist_if_installed():
    if not fashion_mnist.DEBIAN_DIR.is_dir():
        pytest.skip("Debian dataset-fashion-mnist not installed")
    test = fashion_mnist.load_split("test")
    assert test.images.shape == (10000, 1, 28, 28)
    assert np.bincount(test.labels).tolist() == [1000] * 10


def test_digits_split_is_disjoint_and_stratified():
    train, test = digits.load_split("train"), digits.load_split("test")
    assert len(train) == 1437 and len(test) == 360
    rows_train = {im.tobytes() for im in train.images}
    overlap = sum(im.tobytes() in rows_train for im in test.images)
    assert overlap <= 2  # sklearn digits holds a couple of duplicate images, nothing more
    assert np.bincount(test.labels).min() >= 35


def test_calibration_and_evaluation_never_share_images(digits_task):
    bundle = digits_task.build("vgg_small", progress=False)
    calib = torch.cat(list(digits_task.calib_batches(500, 100, seed=3, bundle=bundle)))
    evals = torch.cat([x for x, _ in digits_task.eval_batches(None, 100, bundle)])
    calib_set = {row.numpy().tobytes() for row in calib}
    shared = sum(row.numpy().tobytes() in calib_set for row in evals)
    assert calib.shape[0] == 500 and evals.shape[0] == 360 and shared <= 2
    assert digits_task.splits() == {"calibration": "train", "evaluation": "test"}


def test_eval_subset_is_fixed_and_calibration_follows_seed(digits_task, digits_vgg):
    a = torch.cat([y for _, y in digits_task.eval_batches(50, 20, digits_vgg)])
    b = torch.cat([y for _, y in digits_task.eval_batches(50, 7, digits_vgg)])
    assert torch.equal(a, b)
    c1 = next(digits_task.calib_batches(10, 10, seed=1, bundle=digits_vgg))
    c2 = next(digits_task.calib_batches(10, 10, seed=2, bundle=digits_vgg))
    assert not torch.equal(c1, c2)


# -- CIFAR -----------------------------------------------------------------------------
def make_cifar(root, num_classes):
    rng = np.random.default_rng(0)
    if num_classes == 10:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for i in range(1, 6):
            with open(folder / f"data_batch_{i}", "wb") as f:
                pickle.dump({b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), b"labels": [i % 10] * 4}, f)
        with open(folder / "test_batch", "wb") as f:
            pickle.dump({b"data": rng.integers(0, 255, (3, 3072), dtype=np.uint8), b"labels": [1, 2, 3]}, f)
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        for split, n in (("train", 5), ("test", 2)):
            with open(folder / split, "wb") as f:
                pickle.dump({b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                             b"fine_labels": list(range(n))}, f)
        with open(folder / "meta", "wb") as f:
            pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, f)


def test_cifar10_and_100_read_python_layout(tmp_path):
    make_cifar(tmp_path, 10)
    make_cifar(tmp_path, 100)
    tr = cifar.load_split(10, "train", str(tmp_path))
    assert tr.images.shape == (20, 3, 32, 32) and tr.num_classes == 10
    te = cifar.load_split(100, "test", str(tmp_path))
    assert te.images.shape == (2, 3, 32, 32) and te.num_classes == 100
    task = CIFAR10Task(data_root=str(tmp_path))
    assert task.eval_set_size() == 3


def test_cifar_missing_and_no_root(tmp_path):
    with pytest.raises(DataNotFoundError, match="--data-root"):
        cifar.load_split(10, "train", None)
    with pytest.raises(DataNotFoundError, match="data_batch_1"):
        cifar.load_split(10, "train", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="cifar-100-python"):
        CIFAR100Task(data_root=str(tmp_path)).split("train")


def test_cifar_refuses_code_in_pickles(tmp_path):
    make_cifar(tmp_path, 10)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [1]}, f)
    with pytest.raises(DataNotFoundError, match="refusing"):
        cifar.load_split(10, "test", str(tmp_path))


# -- ImageNet --------------------------------------------------------------------------
def make_imagenet(root, per_class=4, with_train=False):
    synsets = imagenet.imagenet_synsets()
    splits = ["val"] + (["train"] if with_train else [])
    for split in splits:
        for cls in (synsets[0], synsets[207]):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(np.full((40, 50, 3), 30 * i, dtype=np.uint8)).save(d / f"img{i}.JPEG")
    return synsets


def test_imagenet_val_only_holds_out_calibration(tmp_path):
    synsets = make_imagenet(tmp_path)
    samples = imagenet.split_samples(str(tmp_path))
    calib = {p for p, _ in samples["calibration"]}
    evals = {p for p, _ in samples["evaluation"]}
    assert calib and evals and not calib & evals and len(calib | evals) == 8
    labels = {label for _, label in samples["evaluation"]}
    assert labels == {0, 207}  # WordNet ids map onto the standard class indices
    assert synsets[207].startswith("n")


def test_imagenet_uses_train_for_calibration_and_model_transform(tmp_path):
    make_imagenet(tmp_path, with_train=True)
    task = ImageNetTask(data_root=str(tmp_path))
    assert task.splits()["calibration"] == "train"
    bundle = task.build("mobilenet_v2")
    x, y = next(task.eval_batches(None, 8, bundle))
    assert x.shape == (8, 3, 224, 224) and y.tolist() == [0] * 4 + [207] * 4
    calib = next(task.calib_batches(3, 3, 0, bundle))
    assert calib.shape == (3, 3, 224, 224)


def test_imagenet_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="--data-root"):
        ImageNetTask().samples()
    with pytest.raises(DataNotFoundError, match="does not exist"):
        imagenet.split_samples(str(tmp_path / "missing"))
    (tmp_path / "val" / "cats").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="not ImageNet-1k WordNet ids"):
        imagenet.split_samples(str(tmp_path))


def test_digits_task_defaults():
    task = DigitsTask()
    assert task.default_model() == "vgg_small" and "vgg_small" in task.models() and task.eval_set_size() == 360
    assert FashionMNISTTask.metric == "top1"
