"""``edgesentry eval isstad``: image AUROC, pixel AUROC and PRO, checked against an independent
computation (scikit-learn's ``roc_auc_score`` and a plain PRO written out below).

The tiny random-init weights make the numbers meaningless as accuracy; they exercise the
pipeline: MVTec layout, masks named ``<stem>.png`` (hazelnut_toy) and ``<stem>_mask.png``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgesentry
from edgesentry.cli import main
from edgesentry.errors import InputError
from edgesentry.metrics import pro_auc

sklearn_metrics = pytest.importorskip("sklearn.metrics")
ndimage = pytest.importorskip("scipy.ndimage")


def plain_pro(masks, maps, thresholds, max_fpr=0.3):
    """PRO the long way: per threshold, each region's overlap and the normal pixels' FPR; the
    (FPR, PRO) points sorted by FPR, cut at ``max_fpr`` by linear interpolation, trapezoids."""
    regions = []
    for mask, amap in zip(masks, maps):
        labels, n = ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3)))
        regions += [amap[labels == r] for r in range(1, n + 1)]
    normal = np.concatenate([a[~(np.asarray(m) > 0)] for m, a in zip(masks, maps)])
    points = [(0.0, 0.0)]
    for t in thresholds:
        points.append((float(np.mean(normal >= t)), float(np.mean([np.mean(r >= t) for r in regions]))))
    points.sort()
    fpr, pro = np.array(points).T
    keep = fpr <= max_fpr
    cut_fpr, cut_pro = list(fpr[keep]), list(pro[keep])
    above = np.flatnonzero(~keep)
    if above.size and cut_fpr[-1] < max_fpr:
        i = above[0]
        cut_pro.append(pro[i - 1] + (max_fpr - fpr[i - 1]) / (fpr[i] - fpr[i - 1]) * (pro[i] - pro[i - 1]))
        cut_fpr.append(max_fpr)
    return float(np.trapezoid(cut_pro, cut_fpr) / max_fpr)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pro_auc_equals_the_plain_computation_on_every_threshold(seed):
    rng = np.random.default_rng(seed)
    masks, maps = [], []
    for i in range(4):
        mask = np.zeros((12, 15), bool)
        if i:  # one good image; the others with one or two blobs (one touching a corner diagonally)
            mask[2:5, 3:7] = True
            if i > 1:
                mask[8:11, 10:14] = True
                mask[7, 9] = True
        masks.append(mask)
        maps.append(np.round(rng.random(mask.shape) + 0.6 * mask, 2))  # rounded: ties between pixels
    every = np.unique(np.concatenate([m.ravel() for m in maps]))
    for max_fpr in (0.3, 0.05, 1.0):
        assert pro_auc(masks, maps, max_fpr=max_fpr) == pytest.approx(plain_pro(masks, maps, every, max_fpr),
                                                                      abs=1e-12)


def test_pro_auc_refuses_what_it_cannot_measure():
    with pytest.raises(InputError, match="anomalous region"):
        pro_auc([np.zeros((4, 4))], [np.ones((4, 4))])
    with pytest.raises(InputError, match="mask shape"):
        pro_auc([np.ones((4, 4))], [np.ones((4, 5))])


def _test_folder(shared: Path) -> Path:
    data = shared / "data" / "hazelnut_toy"
    if not data.is_dir():
        pytest.skip(f"{data} not found")
    return data


def test_eval_isstad_on_hazelnut_matches_an_independent_computation(shared, tiny_bundle, tmp_path, capsys):
    data = _test_folder(shared)
    assert main(["eval", "isstad", str(tiny_bundle), str(data), "--json", str(tmp_path / "eval.json"),
                 "--backend", "torch"]) == 0
    out = capsys.readouterr()
    report = json.loads((tmp_path / "eval.json").read_text())
    assert f"image AUROC {report['image_auroc']:.4f} | pixel AUROC {report['pixel_auroc']:.4f}" in out.out
    assert report["images"] == 23 and report["defective"] == 17 and report["good"] == 6

    # independently: walk the folder, read masks with PIL, score with predict, metrics by sklearn + plain PRO
    det = edgesentry.load(tiny_bundle, backend="torch")
    labels, scores, masks, maps = [], [], [], []
    for image in sorted((data / "test").rglob("*.jpg")):
        res = det.predict(str(image))
        defect = image.parent.name
        if defect == "good":
            mask = np.zeros(res.anomaly_map.shape, bool)
        else:
            with Image.open(data / "ground_truth" / defect / f"{image.stem}.png") as m:
                mask = np.asarray(m) > 127
        labels.append(defect != "good")
        scores.append(res.raw_score)
        masks.append(mask)
        maps.append(res.anomaly_map)
    by_image = {r["image"]: r["raw_score"] for r in report["records"]}
    assert sorted(by_image) == sorted(str(p) for p in (data / "test").rglob("*.jpg"))
    assert report["image_auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)
    pixel = sklearn_metrics.roc_auc_score(np.concatenate([m.ravel() for m in masks]),
                                          np.concatenate([a.ravel() for a in maps]))
    assert report["pixel_auroc"] == pytest.approx(pixel, abs=1e-9)
    # the plain PRO on thresholds at 301 FPR levels in [0, 0.3] (every distinct value of 6M pixels
    # would take hours this way); the curve between them is nearly straight: agree to 2e-3
    normal = np.sort(np.concatenate([a[~m] for m, a in zip(masks, maps)]))
    thresholds = np.quantile(normal, 1.0 - np.linspace(0.0, 0.3, 301))
    assert report["pro"] == pytest.approx(plain_pro(masks, maps, thresholds), abs=2e-3)
    print(f"eval isstad hazelnut (tiny random weights): image AUROC {report['image_auroc']:.4f}, pixel AUROC "
          f"{report['pixel_auroc']:.4f} (sklearn {pixel:.4f}), PRO {report['pro']:.4f} "
          f"(plain {plain_pro(masks, maps, thresholds):.4f}); {report['regions']} regions")


def test_eval_isstad_reads_mvtec_mask_names_and_refuses_wrong_layouts(shared, tiny_bundle, tmp_path, capsys):
    data = _test_folder(shared)
    root = tmp_path / "mvtec"
    for folder in ("test/good", "test/colour"):
        (root / folder).mkdir(parents=True)
    shutil.copy(data / "test/good/05.jpg", root / "test/good/000.jpg")
    shutil.copy(data / "test/colour/03.jpg", root / "test/colour/000.jpg")
    (root / "ground_truth/colour").mkdir(parents=True)
    shutil.copy(data / "ground_truth/colour/03.png", root / "ground_truth/colour/000_mask.png")
    assert main(["eval", "isstad", str(tiny_bundle), str(root / "test"), "--backend", "torch"]) == 0
    assert "(2 images: 1 defective" in capsys.readouterr().out
    (root / "ground_truth/colour/000_mask.png").unlink()
    assert main(["eval", "isstad", str(tiny_bundle), str(root), "--backend", "torch"]) == 1
    assert "no mask for" in capsys.readouterr().err
    assert main(["eval", "isstad", str(tiny_bundle), str(tmp_path)]) == 1
    assert "is not an MVTec-layout folder" in capsys.readouterr().err
