"""Models written by others, built with random weights from tiny configs: the peer suite.

Hugging Face transformers (each returning its own ``ModelOutput``), timm, and Lightning's own
demo classes. Each :class:`Peer` builds its model, makes a sample at a given batch (and
sequence length, where it has one), and names the export options it needs (dynamic sequence
axes). Used by ``tests/test_peers.py`` and by ``tools/docs/coverage_table.py``'s peer sections.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["HF_MODELS", "LIGHTNING_DEMOS", "TIMM_MODELS", "Peer", "call_like_forward", "relative_difference"]


@dataclasses.dataclass
class Peer:
    """One model of the suite.

    ``sample(batch, length)`` returns the sample by ``example_input_array``'s convention; for
    models without a sequence (images, fixed-length audio features) ``length`` is ignored and
    ``sequence`` is ``False``.
    """

    name: str
    build: Callable[[], nn.Module]
    sample: Callable[[int, int], Any]
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    sequence: bool = True


def call_like_forward(model: Any, sample: Any) -> Any:
    """Call ``model`` (eager or ``load()``'s) by ``example_input_array``'s convention, without autograd."""
    with torch.no_grad():
        if isinstance(sample, tuple):
            return model(*sample)
        if isinstance(sample, dict):
            return model(**sample)
        return model(sample)


def relative_difference(got: Any, want: Any) -> float:
    """The largest leaf difference relative to the leaf's scale; ``inf`` when the structures differ.

    Leaves are matched by path (``named_leaves``), so a wrong key or field is a difference too.
    """
    from lightning_deploy.verification.compare import named_leaves

    got_leaves, want_leaves = named_leaves(got, "out"), named_leaves(want, "out")
    if list(got_leaves) != list(want_leaves) or not want_leaves:
        return float("inf")
    worst = 0.0
    for name, w in want_leaves.items():
        g, w = torch.as_tensor(got_leaves[name]).double(), w.double()
        if g.shape != w.shape:
            return float("inf")
        worst = max(worst, float((g - w).abs().max()) / max(float(w.abs().max()), 1e-12))
    return worst


def _ids(batch: int, length: int, seed: int, vocab: int = 99) -> torch.Tensor:
    return torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def _text(batch: int, length: int) -> dict[str, torch.Tensor]:
    """``input_ids`` and an ``attention_mask`` whose last row is padded at the end."""
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length - 2 :] = 0
    return {"input_ids": _ids(batch, length, 0), "attention_mask": mask}


def _seq2seq(batch: int, length: int) -> dict[str, torch.Tensor]:
    return {**_text(batch, length), "decoder_input_ids": _ids(batch, length, 1)}


def _pixels(size: int) -> Callable[[int, int], dict[str, torch.Tensor]]:
    return lambda batch, length: {
        "pixel_values": torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(2))
    }


TEXT_AXES = {"dynamic_axes": {"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}}}
SEQ2SEQ_AXES = {"dynamic_axes": {**TEXT_AXES["dynamic_axes"], "decoder_input_ids": {1: "decoder_sequence"}}}
_SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37}


def _hf(class_name: str, config_name: str, **config: Any) -> Callable[[], nn.Module]:
    """A transformers model from a tiny config, random weights, seeded."""

    def build() -> nn.Module:
        import transformers

        torch.manual_seed(0)
        settings = {"vocab_size": 99, **config}
        return getattr(transformers, class_name)(getattr(transformers, config_name)(**settings)).eval()

    return build


def _clip() -> nn.Module:
    import transformers

    torch.manual_seed(0)
    text = {"vocab_size": 99, "max_position_embeddings": 64, "bos_token_id": 1, "eos_token_id": 98, **_SMALL}
    vision = {"image_size": 32, "patch_size": 8, **_SMALL}
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    return transformers.CLIPModel(config).eval()


def _clip_sample(batch: int, length: int) -> dict[str, torch.Tensor]:
    return {**_text(batch, length), **_pixels(32)(batch, length)}


def _wav2vec2_sample(batch: int, length: int) -> dict[str, torch.Tensor]:
    return {"input_values": torch.randn(batch, 40 * length, generator=torch.Generator().manual_seed(3))}


def _mel_features(batch: int, length: int) -> dict[str, torch.Tensor]:
    """Log-mel features of Whisper's fixed length (2 x max_source_positions frames)."""
    return {"input_features": torch.randn(batch, 8, 32, generator=torch.Generator().manual_seed(4))}


class WhisperEncoder(nn.Module):
    """Whisper's encoder alone (the audio half that users export apart from decoding)."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder as Encoder

        torch.manual_seed(0)
        config = WhisperConfig(
            vocab_size=99, d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=37,
            num_mel_bins=8, max_source_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            decoder_start_token_id=1,
        )  # fmt: skip
        self.encoder = Encoder(config).eval()

    def forward(self, input_features: torch.Tensor) -> Any:
        """The encoder's ``BaseModelOutput`` for log-mel features ``[batch, 8, 32]``."""
        return self.encoder(input_features)


HF_MODELS = {
    peer.name: peer
    for peer in (
        Peer("bert", _hf("BertModel", "BertConfig", max_position_embeddings=64, **_SMALL), _text, TEXT_AXES),
        Peer("roberta", _hf("RobertaModel", "RobertaConfig", max_position_embeddings=64, **_SMALL), _text, TEXT_AXES),
        Peer(
            "distilbert-qa",
            _hf("DistilBertForQuestionAnswering", "DistilBertConfig", dim=32, n_layers=2, n_heads=4, hidden_dim=37),
            _text,
            TEXT_AXES,
        ),
        Peer(
            "deberta-v2",
            _hf(
                "DebertaV2Model",
                "DebertaV2Config",
                max_position_embeddings=64,
                relative_attention=True,
                pos_att_type=["p2c", "c2p"],
                **_SMALL,
            ),
            _text,
            TEXT_AXES,
        ),
        Peer(
            "gpt2",
            _hf("GPT2LMHeadModel", "GPT2Config", n_embd=32, n_layer=2, n_head=4, n_positions=64, use_cache=False),
            _text,
            TEXT_AXES,
        ),
        Peer(
            "llama",
            _hf(
                "LlamaForCausalLM",
                "LlamaConfig",
                num_key_value_heads=2,
                max_position_embeddings=64,
                use_cache=False,
                **_SMALL,
            ),
            _text,
            TEXT_AXES,
        ),
        Peer(
            "t5",
            _hf(
                "T5ForConditionalGeneration",
                "T5Config",
                d_model=32,
                d_ff=37,
                d_kv=8,
                num_layers=2,
                num_heads=4,
                use_cache=False,
            ),
            _seq2seq,
            SEQ2SEQ_AXES,
        ),
        Peer(
            "bart",
            _hf(
                "BartForConditionalGeneration",
                "BartConfig",
                d_model=32,
                encoder_layers=2,
                decoder_layers=2,
                encoder_attention_heads=4,
                decoder_attention_heads=4,
                encoder_ffn_dim=37,
                decoder_ffn_dim=37,
                max_position_embeddings=64,
                use_cache=False,
            ),
            _seq2seq,
            SEQ2SEQ_AXES,
        ),
        Peer("vit", _hf("ViTModel", "ViTConfig", image_size=32, patch_size=8, **_SMALL), _pixels(32), sequence=False),
        Peer("clip", _clip, _clip_sample, TEXT_AXES),
        Peer(
            "wav2vec2",
            _hf(
                "Wav2Vec2Model",
                "Wav2Vec2Config",
                conv_dim=(32, 32),
                conv_stride=(5, 2),
                conv_kernel=(10, 3),
                num_conv_pos_embeddings=16,
                num_conv_pos_embedding_groups=2,
                **_SMALL,
            ),
            _wav2vec2_sample,
            {"dynamic_axes": {"input_values": {1: "samples"}}},
        ),
        Peer(
            "whisper-encoder",
            WhisperEncoder,
            _mel_features,
            sequence=False,
        ),
    )
}


def _demo_transformer() -> nn.Module:
    from lightning.pytorch.demos.transformer import Transformer

    torch.manual_seed(0)
    return Transformer(vocab_size=99, ninp=32, nhead=2, nhid=32, nlayers=1).eval()


def _demo_lstm() -> nn.Module:
    from lightning.pytorch.demos.lstm import SimpleLSTM

    torch.manual_seed(0)
    return SimpleLSTM(vocab_size=99, ninp=16, nhid=16, nlayers=2).eval()


def _lstm_sample(batch: int, length: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """``(input, (h, c))``: the hidden state has the batch in dim 1, as ``SimpleLSTM.init_hidden`` makes it."""
    generator = torch.Generator().manual_seed(5)
    state = torch.randn(2, 2, batch, 16, generator=generator)
    return _ids(batch, length, 6), (state[0], state[1])


def _boring() -> nn.Module:
    from lightning.pytorch.demos.boring_classes import BoringModel

    torch.manual_seed(0)
    return BoringModel().eval()


TRANSFORMER_SEQUENCE = {"dynamic_axes": {"inputs": {1: "sequence"}, "target": {1: "sequence"}}}
# SimpleLSTM's state holds the batch in dim 1: the batch is named per leaf instead of dynamic_batch.
LSTM_AXES = {"dynamic_batch": False, "dynamic_axes": {"input": {0: "batch", 1: "sequence"}, "hidden": {1: "batch"}}}
LIGHTNING_DEMOS = {
    peer.name: peer
    for peer in (
        Peer(
            "Transformer (batch dynamic)",
            _demo_transformer,
            lambda b, n: (_ids(b, 8, 7), _ids(b, 8, 8)),
            sequence=False,
        ),
        Peer(
            "Transformer (batch and sequence dynamic)",
            _demo_transformer,
            lambda b, n: (_ids(b, n, 7), _ids(b, n, 8)),
            TRANSFORMER_SEQUENCE,
        ),
        Peer("SimpleLSTM", _demo_lstm, _lstm_sample, LSTM_AXES),
        Peer(
            "BoringModel",
            _boring,
            lambda b, n: torch.randn(b, 32, generator=torch.Generator().manual_seed(9)),
            sequence=False,
        ),
    )
}


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        torch.manual_seed(0)
        return timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()

    return build


def _images(size: int) -> Callable[[int, int], torch.Tensor]:
    return lambda batch, length: torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(10))


TIMM_MODELS = {
    peer.name: peer
    for peer in (
        Peer("resnet18", _timm("resnet18"), _images(64), sequence=False),
        Peer("efficientnet_b0", _timm("efficientnet_b0"), _images(64), sequence=False),
        Peer("convnext_atto", _timm("convnext_atto"), _images(64), sequence=False),
        Peer("mobilenetv3_small_050", _timm("mobilenetv3_small_050"), _images(64), sequence=False),
        Peer("vit_tiny_patch16_224", _timm("vit_tiny_patch16_224", img_size=64), _images(64), sequence=False),
        Peer("deit_tiny_patch16_224", _timm("deit_tiny_patch16_224", img_size=64), _images(64), sequence=False),
    )
}
