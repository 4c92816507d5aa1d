"""Models written by others (tools/models/peers.py): exported, then run through load() at a new shape.

Every artifact is exported at batch 2 (sequence 8) and loaded again at batch 3 (sequence 11),
a shape the verification never saw, and compared with eager leaf by leaf, structure included.
Small models run by default; the rest are marked slow.
"""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")
pytest.importorskip("timm")

from peers import (  # tools/models/peers.py, on the path via conftest
    HF_MODELS,
    LIGHTNING_DEMOS,
    TIMM_MODELS,
    call_like_forward,
    relative_difference,
)

from lightning_deploy import ConfigurationError, export, load

FORMATS = ("onnx", "torchscript", "pt2")
DEFAULT_HF = {"bert", "gpt2", "vit", "t5"}
DEFAULT_TIMM = {"resnet18"}
# Untrained models whose outputs sit within the tolerance of zero: their comparison proves nothing and the
# manifest must say so (``vacuous``). timm's efficientnet_b0 with random weights: logits below 1e-4.
VACUOUS_WHEN_UNTRAINED = {"efficientnet_b0"}


def check_peer(peer, tmp_path, required=("onnx", "torchscript")):
    """Export at batch 2 / sequence 8; every ok artifact matches eager through load() at 2/8 and 3/11."""
    model = peer.build()
    manifest = export(model, peer.sample(2, 8), tmp_path, "model", formats=FORMATS, **peer.options)
    by_format = {a["format"]: a for a in manifest["artifacts"]}
    for fmt in required:
        assert by_format[fmt]["ok"], (fmt, by_format[fmt]["error"])
    assert by_format["pt2"]["ok"] or by_format["pt2"]["error"]  # .pt2 verified, or why not recorded
    vacuous = {a["vacuous"] for a in manifest["artifacts"]}
    assert vacuous == {peer.name in VACUOUS_WHEN_UNTRAINED}  # flagged exactly where the check proves nothing
    for batch, length in ((2, 8), (3, 11)):
        sample = peer.sample(batch, length)
        want = call_like_forward(model, sample)
        for artifact in (a for a in manifest["artifacts"] if a["ok"]):
            got = call_like_forward(load(tmp_path / artifact["path"]), sample)
            assert relative_difference(got, want) <= 2e-3, (artifact["format"], batch, length)
    return manifest


def _params(peers, default):
    return [pytest.param(p, id=p.name, marks=[] if p.name in default else [pytest.mark.slow]) for p in peers.values()]


@pytest.mark.parametrize("peer", _params(HF_MODELS, DEFAULT_HF))
def test_hugging_face_model_output_exports_and_loads_at_a_new_batch_and_length(tmp_path, peer):
    manifest = check_peer(peer, tmp_path)
    assert manifest["outputs"]["schema"]["tree"]["kind"] == "record"  # its ModelOutput, rebuilt by load()
    assert manifest["outputs"]["schema"]["tree"]["class"].startswith("transformers.")


@pytest.mark.parametrize("peer", _params(TIMM_MODELS, DEFAULT_TIMM))
def test_timm_model_exports_and_loads_at_a_new_batch(tmp_path, peer):
    check_peer(peer, tmp_path)


def test_lightning_boring_model(tmp_path):
    check_peer(LIGHTNING_DEMOS["BoringModel"], tmp_path, required=("onnx",))


def test_simple_lstm_default_options_name_the_fix_before_anything_is_written(tmp_path):
    peer = LIGHTNING_DEMOS["SimpleLSTM"]
    with pytest.raises(ConfigurationError, match=r"input 'hidden.0' dim 0 \('batch'\): 2 -> 3.*dynamic_batch=False"):
        export(peer.build(), peer.sample(2, 8), tmp_path, "model", formats=["onnx"])
    assert not list(tmp_path.iterdir())


def test_simple_lstm_with_the_batch_in_dim_1_of_its_state(tmp_path):
    check_peer(LIGHTNING_DEMOS["SimpleLSTM"], tmp_path)


def test_lightning_demo_transformer_with_the_batch_dynamic_matches_at_batch_4(tmp_path):
    peer = LIGHTNING_DEMOS["Transformer (batch dynamic)"]
    manifest = check_peer(peer, tmp_path)
    assert manifest["attention_fast_path"]["ok"]  # eager's fused path agrees with the math path that was exported
    sample = peer.sample(4, 8)
    got = call_like_forward(load(tmp_path / "model.onnx"), sample)
    assert relative_difference(got, call_like_forward(peer.build(), sample)) <= 2e-3


@pytest.mark.slow
def test_lightning_demo_transformer_with_batch_and_sequence_dynamic(tmp_path):
    check_peer(LIGHTNING_DEMOS["Transformer (batch and sequence dynamic)"], tmp_path)
