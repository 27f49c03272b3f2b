"""MDMF / CLIP model definitions vs the official state_dict manifest, and the strict loaders."""

from __future__ import annotations

import numpy as np
import pytest

from edgesentry.errors import WeightsError

torch = pytest.importorskip("torch")
from edgesentry.models import mdmf as M  # noqa: E402


def _meta(module_factory):
    with torch.device("meta"):  # no allocation: RN50 + heads would be ~350 MB
        return module_factory()


@pytest.mark.shared
def test_full_model_has_exactly_the_used_manifest_keys(manifest):
    keys = manifest["mdmf_state_dict"]["keys"]
    used = {k: v for k, v in keys.items() if v["used_in_inference"]}
    unused = {k for k, v in keys.items() if not v["used_in_inference"]}
    assert unused == {"scale", "context_conv11.weight", "context_conv11.bias", "context_conv22.weight",
                      "context_conv22.bias"}
    model = _meta(lambda: M.MDMF(M.MDMFConfig(text=None)))
    state = model.state_dict()
    assert set(state) == set(used), sorted(set(state) ^ set(used))[:10]
    for k, meta in used.items():
        assert list(state[k].shape) == meta["shape"], k
        assert str(state[k].dtype).replace("torch.", "") == meta["dtype"], k
    n_unique = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    assert n_unique == (manifest["mdmf_state_dict"]["num_elements_unique"]
                        - manifest["mdmf_state_dict"]["num_elements_unused"])


@pytest.mark.shared
def test_clip_towers_match_the_rn50_manifest(manifest):
    keys = manifest["clip_rn50_full_state_dict"]["keys"]
    model = _meta(lambda: M.MDMF(M.MDMFConfig(text=None)))
    text = _meta(lambda: M.CLIPText(M.CLIPTextConfig()))
    ours = {f"visual.{k}": v for k, v in model.backbone.state_dict().items()} | dict(text.state_dict())
    assert set(ours) == set(keys), sorted(set(ours) ^ set(keys))[:10]
    for k, meta in keys.items():
        assert list(ours[k].shape) == meta["shape"], k
    assert sum(v.numel() for k, v in text.state_dict().items()) == \
        manifest["clip_rn50_full_state_dict"]["num_elements_text_tower"]
    # the hyper-parameters are recovered from the weights, as OpenAI's build_model does
    vis = M.infer_visual_config({k[7:]: v for k, v in ours.items() if k.startswith("visual.")})
    assert vis == M.CLIPVisualConfig()
    assert M.infer_text_config(ours) == M.CLIPTextConfig()


SMALL = M.MDMFConfig(dim=32, mlp_dim=64, visual=M.CLIPVisualConfig(layers=(1, 1, 1, 1), width=8, image_size=64,
                                                                    heads=4, output_dim=32), text=None)


def _official_style_state(model: M.MDMF) -> dict:
    """What the seed saves: backbone.module.* (DataParallel), duplicated TCN keys, dead keys."""
    state = {}
    for k, v in model.state_dict().items():
        state[k.replace("backbone.", "backbone.module.", 1) if k.startswith("backbone.") else k] = v.clone()
    d = model.cfg.dim
    state["scale"] = torch.ones(1)
    for name in ("context_conv11", "context_conv22"):
        state[f"{name}.weight"], state[f"{name}.bias"] = torch.zeros(d, d, 3), torch.zeros(d)
    return state


def test_loader_handles_dataparallel_aliases_and_dead_keys():
    torch.manual_seed(0)
    src = M.MDMF(SMALL).eval()
    state = _official_style_state(src)
    assert any(k.startswith("backbone.module.") for k in state) and "tcn.network.2.net.4.weight_v" in state
    dst = M.MDMF(SMALL).eval()
    dropped = M.load_mdmf_state_dict(dst, state)
    assert sorted(dropped) == sorted(["scale", "context_conv11.weight", "context_conv11.bias",
                                      "context_conv22.weight", "context_conv22.bias"])
    f, p = torch.randn(2, 8, 32), torch.randn(2, 32)
    with torch.inference_mode():
        for a, b in zip(src(f, p), dst(f, p)):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
    # the duplicated conv is one module: both names read the same tensor
    assert dst.tcn.network[0].net[0] is dst.tcn.network[0].conv1
    # a whole-model DataParallel wrap (module.*) loads too
    wrapped = {f"module.{k}": v for k, v in state.items()}
    M.load_mdmf_state_dict(M.MDMF(SMALL), wrapped)


def test_loader_is_strict():
    model = M.MDMF(SMALL)
    state = _official_style_state(model)
    missing = {k: v for k, v in state.items() if not k.startswith("context2.layers.0.1.net.3")}
    with pytest.raises(WeightsError, match=r"2 missing: context2\.layers\.0\.1\.net\.3"):
        M.load_mdmf_state_dict(M.MDMF(SMALL), missing)
    extra = {**state, "context3.weight": torch.zeros(1)}
    with pytest.raises(WeightsError, match=r"1 unexpected: context3\.weight"):
        M.load_mdmf_state_dict(M.MDMF(SMALL), extra)
    bad = {**state, "context_conv1.bias": torch.zeros(7)}
    with pytest.raises(WeightsError, match=r"mis-shaped: context_conv1\.bias: expected \(32,\), got \(7,\)"):
        M.load_mdmf_state_dict(M.MDMF(SMALL), bad)
    forked = {**state, "tcn.network.1.net.0.bias": state["tcn.network.1.conv1.bias"] + 1}
    with pytest.raises(WeightsError, match="should duplicate"):
        M.load_mdmf_state_dict(M.MDMF(SMALL), forked)
    heads = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    with pytest.raises(WeightsError, match="missing: backbone"):
        M.load_mdmf_state_dict(M.MDMF(SMALL), heads)
    M.load_mdmf_state_dict(M.MDMF(SMALL, with_backbone=False), heads, heads_only=True)


def test_weight_norm_and_causality():
    torch.manual_seed(1)
    model = M.MDMF(SMALL, with_backbone=False).eval()
    conv = model.tcn.network[1].conv2
    v, g = conv.weight_v.detach(), conv.weight_g.detach()
    want = g * v / v.flatten(1).norm(dim=1).reshape(-1, 1, 1)
    torch.testing.assert_close(conv.weight(), want)
    # the TCN is causal: changing the last frame leaves earlier outputs unchanged
    f = torch.randn(1, 8, 32)
    f2 = f.clone()
    f2[:, -1] += 1
    with torch.inference_mode():
        a, b = model.tcn_output(f), model.tcn_output(f2)
    torch.testing.assert_close(a[:, :-1], b[:, :-1], atol=0, rtol=0)
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_tokenizer_builds_clip_vocab_layout():
    merges = ["h e", "l l", "he ll", "hell o</w>"]
    tok = M.ClipTokenizer(merges)
    assert tok.sot == 512 + len(merges) and tok.eot == tok.sot + 1
    ids = tok.encode("Hello  hello!")
    assert ids[0] == tok.encoder["hello</w>"] and ids[1] == ids[0]
    arr = tok.encode_batch(["hello"], context_length=6)
    assert arr.shape == (1, 6) and arr[0, 0] == tok.sot and arr[0, 2] == tok.eot and arr[0, 3:].sum() == 0
    assert np.argmax(arr[0]) == 2  # the end-of-text token has the largest id, as CLIP relies on
