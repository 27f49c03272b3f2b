"""End to end on the two real clips with small random CLIP towers: an official-layout
checkpoint and a CLIP state dict are converted by the CLI, both clips' first halves are
enrolled (2-way 1-shot) and their second halves classified, with torch and with the exported
ONNX graphs (parity checked)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from edgesentry.errors import InputError, WeightsError

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")
from edgesentry.models import mdmf as M  # noqa: E402

pytestmark = pytest.mark.shared

CLIPS = {"arm wrestling": "demo.mp4", "drink water": "S001C001P001R001A001_rgb.avi"}
TEXT = M.CLIPTextConfig(context_length=16, vocab_size=600, width=64, heads=1, layers=1, embed_dim=32)
VISUAL = M.CLIPVisualConfig(layers=(1, 1, 1, 1), width=8, image_size=224, heads=4, output_dim=32)


@pytest.fixture(scope="module")
def clips(shared: Path) -> dict[str, Path]:
    root = shared / "data" / "action_clips"
    paths = {k: root / v for k, v in CLIPS.items()}
    if not all(p.is_file() for p in paths.values()):
        pytest.skip(f"action clips not found under {root}")
    return paths


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint as the seed saves it and a CLIP state dict, both with random weights."""
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("mdmf_smoke")
    model = M.MDMF(M.MDMFConfig(dim=32, mlp_dim=64, visual=VISUAL, text=None))
    state = {("backbone.module." + k[9:] if k.startswith("backbone.") else k): v for k, v in model.state_dict().items()}
    state["scale"] = torch.ones(1)
    torch.save({"iteration": 10, "model_state_dict": state, "optimizer_state_dict": {}}, tmp / "checkpoint.pt")
    text = M.CLIPText(TEXT)
    clip_state = {f"visual.{k}": v for k, v in M.ModifiedResNet(VISUAL).state_dict().items()}
    clip_state.update(text.state_dict())
    torch.save(clip_state, tmp / "clip.pt")
    merges = ["a r", "ar m</w>", "w r", "wr e", "d r", "i n", "k</w> i"]
    (tmp / "vocab.txt.gz").write_bytes(gzip.compress(("#version: 0.2\n" + "\n".join(merges) + "\n").encode()))
    return {"ckpt": tmp / "checkpoint.pt", "clip": tmp / "clip.pt", "vocab": tmp / "vocab.txt.gz", "dir": tmp}


def test_enroll_and_classify_two_real_clips(files, clips, capsys):
    import edgesentry
    from edgesentry.cli import main

    bundle, gallery = files["dir"] / "bundle", files["dir"] / "gallery.npz"
    assert main(["convert", "mdmf", str(files["ckpt"]), "--clip", str(files["clip"]), "--clip-vocab",
                 str(files["vocab"]), "-o", str(bundle)]) == 0
    meta = json.loads((bundle / "meta.json").read_text())
    assert meta["extra"]["dropped_keys"] == ["scale"] and meta["config"]["model"]["text"]["embed_dim"] == 32
    for label, path in clips.items():
        assert main(["enroll", str(bundle), str(gallery), label, f"{path}@0:0.5", "--backend", "torch"]) == 0
    out = files["dir"] / "result.json"
    assert main(["classify", str(bundle), str(gallery), f"{clips['arm wrestling']}@0.5:1", "--json", str(out),
                 "--backend", "torch"]) == 0
    summary = json.loads(out.read_text())
    assert summary["label"] in CLIPS and set(summary["logits"]) == set(CLIPS)
    assert all(np.isfinite(v) for v in summary["logits"].values())
    assert "arm wrestling" in capsys.readouterr().out
    # one more shot, a class from a precomputed text embedding, the seed's prompt draw
    demo = clips["arm wrestling"]
    assert main(["enroll", str(bundle), str(gallery), "arm wrestling", f"{demo}@0.25:0.5", "--append"]) == 0
    np.save(files["dir"] / "emb.npy", np.random.default_rng(0).standard_normal(32).astype(np.float32))
    assert main(["enroll", str(bundle), str(gallery), "other", f"{demo}@0:0.25", "--embedding",
                 str(files["dir"] / "emb.npy")]) == 0
    assert "arm wrestling (2)" in capsys.readouterr().out
    assert main(["classify", str(bundle), str(gallery), f"{demo}@0.5:1", "--prompt-mode", "sample",
                 "--seed", "3"]) == 0
    assert main(["classify", str(bundle), str(gallery), f"{demo}@0.5:1", "--prompt-mode", "sample"]) == 1
    assert "pass an explicit --seed N" in capsys.readouterr().err  # the CLI's words, not seed=
    # the same through the Python API, both query halves; text embeddings are cached per prompt
    det = edgesentry.load(bundle, backend="torch")
    g = det.load_gallery(gallery)
    g.remove("other")
    assert g.labels == sorted(CLIPS) and det.text_embedding("x", "a photo of drink water").shape == (32,)
    for path in clips.values():
        res = det.classify(f"{path}@0.5:1", g)
        assert res.extras["logits"].shape == (1, 2) and np.isfinite(res.extras["logits"]).all()
        assert res.info["label"] in CLIPS and res.info["backend"] == "torch"


def test_onnx_export_parity_and_backend(files, clips):
    import edgesentry
    from edgesentry.bundle import Bundle
    from edgesentry.export.onnx import export_bundle

    bundle = files["dir"] / "bundle_onnx"
    from edgesentry.detectors import mdmf

    mdmf.convert(files["ckpt"], files["clip"], output=bundle, clip_vocab=files["vocab"])
    reports = export_bundle(Bundle.open(bundle))
    assert set(reports) == {"visual", "views"} and all(reports.values())
    frames = np.random.default_rng(0).uniform(0, 1, (3, 8, 3, 224, 224)).astype(np.float32)  # batch 3 != example 2
    det_t = edgesentry.load(bundle, backend="torch")
    det_o = edgesentry.load(bundle, backend="onnxruntime")
    assert det_o.backend == "onnxruntime"
    np.testing.assert_allclose(det_o.visual(frames), det_t.visual(frames), atol=1e-4, rtol=1e-4)
    g_t, g_o = det_t.gallery(), det_o.gallery()
    for label in clips:
        emb = det_t.text_embedding(label)
        g_t.enroll(label, [frames[0] if label == "drink water" else frames[1]], prompt=emb)
        g_o.enroll(label, [frames[0] if label == "drink water" else frames[1]], prompt=emb)
    r_t, r_o = det_t.classify(frames[2], g_t), det_o.classify(frames[2], g_o)
    np.testing.assert_allclose(r_o.extras["logits"], r_t.extras["logits"], atol=1e-4, rtol=1e-4)


def test_heads_only_checkpoint_is_features_in(files, tmp_path):
    import edgesentry
    from edgesentry.detectors import mdmf

    state = torch.load(files["ckpt"], weights_only=True)["model_state_dict"]
    heads = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    torch.save(heads, tmp_path / "heads.pt")
    mdmf.convert(tmp_path / "heads.pt", output=tmp_path / "b")
    det = edgesentry.load(tmp_path / "b", backend="torch")
    assert det.settings.features_in and det.model.backbone is None
    rng = np.random.default_rng(0)
    res = det.classify_features(rng.standard_normal((2, 8, 32)).astype(np.float32),
                                rng.standard_normal((4, 8, 32)).astype(np.float32), np.array([3, 7, 3, 7]),
                                rng.standard_normal((2, 32)).astype(np.float32))
    assert res.extras["logits"].shape == (2, 2) and res.info["labels"] == [3, 7]


def test_convert_bad_inputs(files, tmp_path):
    from edgesentry.detectors import mdmf

    with pytest.raises(InputError, match="not found"):
        mdmf.convert(tmp_path / "missing.pt", output=tmp_path / "x")
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="weights_only"):
        mdmf.convert(tmp_path / "junk.pt", output=tmp_path / "y")
    torch.save({"context_conv1.weight": torch.zeros(4, 4, 3)}, tmp_path / "partial.pt")
    with pytest.raises(WeightsError, match="not an MDMF checkpoint"):
        mdmf.convert(tmp_path / "partial.pt", output=tmp_path / "z")
    # a TorchScript archive (OpenAI ships RN50.pt that way) is read for its state_dict only
    scripted = torch.jit.script(torch.nn.Linear(2, 3))
    scripted.save(str(tmp_path / "jit.pt"))
    from edgesentry.models.mdmf import read_checkpoint

    state = read_checkpoint(tmp_path / "jit.pt")
    assert set(state) == {"weight", "bias"} and tuple(state["weight"].shape) == (3, 2)
