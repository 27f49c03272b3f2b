"""The stage-2 network against the official oracle, and its strict loader."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from edgesentry.errors import ConfigError, WeightsError
from edgesentry.models.isstad import (
    DEAD_KEY_PATTERN,
    ISSTADConfig,
    ISSTADGraph,
    ISSTADNet,
    check_state_dict,
    clean_state_dict,
    load_isstad_state_dict,
    official_permutation,
    sincos_pos_embed,
)
from tests.utils import assert_verbose_allclose


@pytest.fixture(scope="module")
def tiny_net(isstad_ref, tiny_config) -> ISSTADNet:
    net = ISSTADNet(ISSTADConfig.from_dict(tiny_config["constructor_kwargs"])).eval()
    ignored = load_isstad_state_dict(net, torch.load(isstad_ref / "tiny_stage2_seed0.pt", weights_only=True))
    assert ignored == ["img_pos_embed", "mask_token"]  # present in the file, unused at inference
    return net


@pytest.mark.parametrize("mode", ["identity", "official_seed123"])
def test_forward_matches_oracle(tiny_net, oracle, mode):
    """Latent, recon, head logits and P from the oracle's inputs and recorded permutation."""
    x = torch.from_numpy(oracle["preprocessed"])
    perm = torch.from_numpy(oracle[f"{mode}/perm"])
    with torch.inference_mode():
        latent = tiny_net.forward_encoder(x, perm)
        recon, logits = tiny_net(x, perm)
        recon2, prob = tiny_net.forward_prob(x, perm)
    # tolerances: README "suggested test tolerances for a float32 re-implementation"
    assert_verbose_allclose(latent, oracle[f"{mode}/latent"], atol=1e-4, rtol=0)
    assert_verbose_allclose(recon, oracle[f"{mode}/recon"], atol=1e-4, rtol=0)
    assert_verbose_allclose(recon2, recon, atol=1e-6, rtol=0)
    assert_verbose_allclose(logits[:1], oracle[f"{mode}/head_logits_img0"], atol=1e-4, rtol=0)
    assert_verbose_allclose(prob, oracle[f"{mode}/P"], atol=1e-5, rtol=0)


def test_identity_is_no_permutation(tiny_net, oracle):
    assert np.array_equal(oracle["identity/perm"], np.tile(np.arange(196), (3, 1)))
    x = torch.from_numpy(oracle["preprocessed"][:1])
    with torch.inference_mode():
        a = tiny_net.forward_prob(x, None)[1]
        b = tiny_net.forward_prob(x, torch.arange(196)[None])[1]
    assert torch.equal(a, b)


def test_official_permutation_replays_the_cpu_stream(oracle):
    """torch.manual_seed(123) then rand(3, 196): the official random_masking draw on CPU."""
    gen = torch.Generator().manual_seed(123)
    assert np.array_equal(official_permutation(3, 196, gen).numpy(), oracle["official_seed123/perm"])
    gen = torch.Generator().manual_seed(123)
    assert np.array_equal(torch.rand(3, 196, generator=gen).numpy(), oracle["official_seed123/noise"])


def test_graph_permutation_modes(tiny_net, oracle):
    x = torch.from_numpy(oracle["preprocessed"])
    with torch.inference_mode():
        seeded = ISSTADGraph(tiny_net, "official", seed=123)(x)[1]
        recorded = ISSTADGraph(tiny_net, "recorded", recorded=oracle["official_seed123/perm"])(x)[1]
    assert torch.equal(seeded, recorded)
    assert_verbose_allclose(recorded, oracle["official_seed123/P"], atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="seed"):
        ISSTADGraph(tiny_net, "official")
    with pytest.raises(ConfigError, match="permutation of 0..195"):
        ISSTADGraph(tiny_net, "recorded", recorded=np.zeros((1, 196), np.int64))
    with pytest.raises(ConfigError, match="batch has 1"):
        ISSTADGraph(tiny_net, "recorded", recorded=oracle["official_seed123/perm"])(x[:1])


def test_sincos_matches_the_stored_embeddings(isstad_ref):
    sd = torch.load(isstad_ref / "tiny_stage2_seed0.pt", weights_only=True)
    np.testing.assert_allclose(sincos_pos_embed(64, 14), sd["pos_embed"][0].numpy(), atol=1e-6)
    np.testing.assert_allclose(sincos_pos_embed(32, 14), sd["decoder_pos_embed"][0].numpy(), atol=1e-6)


def _manifest_state_dict(section: dict) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v["shape"], device="meta") for k, v in section["keys"].items()}


def test_full_vit_large_has_exactly_the_manifest_used_keys(manifest):
    """Default config = official ViT-L/16 stage 2; built on the meta device (no allocation)."""
    section = manifest["stage2_full"]
    with torch.device("meta"):
        net = ISSTADNet(ISSTADConfig())
    own = {k: list(v.shape) for k, v in net.state_dict().items()}
    used = {k: v["shape"] for k, v in section["keys"].items() if v["used_in_inference"]}
    assert own == used
    assert sum(int(np.prod(s)) for s in own.values()) == section["num_elements_used_in_inference"]
    dead = {k for k, v in section["keys"].items() if not v["used_in_inference"]}
    assert dead == {k for k in section["keys"] if DEAD_KEY_PATTERN.match(k)}
    # the full official state_dict (dead modules included) passes the strict check
    kept, ignored = check_state_dict(ISSTADConfig(), _manifest_state_dict(section))
    assert set(kept) == set(used) and set(ignored) == dead


def test_stage1_checkpoint_is_refused_with_a_reason(manifest):
    sd = _manifest_state_dict(manifest["stage1_mae"])
    with pytest.raises(WeightsError, match="stage-1 MAE checkpoint") as info:
        check_state_dict(ISSTADConfig(), {"model": sd})
    assert "74 missing" in str(info.value)  # decoder blocks 6-11 (6 x 12 keys) and mask_pred


def test_loader_strips_module_prefix_and_lists_problems(tiny_config, isstad_ref):
    cfg = tiny_config["constructor_kwargs"]
    sd = torch.load(isstad_ref / "tiny_stage2_seed0.pt", weights_only=True)
    wrapped = {"model": {f"module.{k}": v for k, v in sd.items()}, "args": argparse.Namespace(lr=1)}
    assert set(clean_state_dict(wrapped)) == set(sd)
    check_state_dict(cfg, wrapped)
    bad = dict(sd)
    bad["surprise.weight"] = torch.zeros(3)
    with pytest.raises(WeightsError, match=r"1 unexpected \['surprise.weight'\]"):
        check_state_dict(cfg, bad)
    bad = dict(sd)
    bad["norm.weight"] = torch.zeros(65)
    with pytest.raises(WeightsError, match=r"norm.weight: checkpoint \(65,\) vs model \(64,\)"):
        check_state_dict(cfg, bad)
    bad = {k: v for k, v in sd.items() if k != "decoder_pred.bias"}
    with pytest.raises(WeightsError, match=r"1 missing \['decoder_pred.bias'\]"):
        check_state_dict(cfg, bad)
    with pytest.raises(WeightsError, match="state_dict"):
        check_state_dict(cfg, [1, 2])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"img_size": 100}, "multiple of patch_size"),
    ({"embed_dim": 100, "num_heads": 16}, "divide by their head counts"),
    ({"depth": 0}, "positive integer"),
    ({"mlp_ratio": -1.0}, "mlp_ratio"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ISSTADConfig(**kwargs)
    with pytest.raises(ConfigError, match="unknown ISSTAD config keys"):
        ISSTADConfig.from_dict({"embed_dims": 3})
