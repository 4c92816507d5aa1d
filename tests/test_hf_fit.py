"""A real Trainer.fit of a LightningModule around a Hugging Face model that returns its ModelOutput."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from peers import TEXT_AXES  # tools/models/peers.py
from torch.utils.data import DataLoader, TensorDataset

from lightning_deploy import ModelExport, load

transformers = pytest.importorskip("transformers")


class SentimentModule(pl.LightningModule):
    """Tiny BERT sequence classifier; ``forward`` returns the model's ``SequenceClassifierOutput``."""

    def __init__(self) -> None:
        super().__init__()
        config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=37, max_position_embeddings=64, num_labels=2)  # fmt: skip
        self.model = transformers.BertForSequenceClassification(config)
        # the mask's dtype is what the steps pass (ones_like(ids): int64): validate=True runs validation_step
        # with each artifact as forward, and an artifact exported with a float mask refuses int64 there
        mask = torch.ones(2, 8, dtype=torch.long)
        self.example_input_array = {"input_ids": torch.randint(3, 99, (2, 8)), "attention_mask": mask}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return self.model(input_ids=input_ids, attention_mask=attention_mask)

    def training_step(self, batch, batch_idx):
        ids, labels = batch
        return self.model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss

    def validation_step(self, batch, batch_idx):
        ids, labels = batch
        logits = self(ids, torch.ones_like(ids)).logits
        self.log("val_acc", (logits.argmax(-1) == labels).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def _loaders():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 99, (96, 8), generator=generator)
    labels = (ids[:, 0] > 50).long()  # learnable from the first token
    train = DataLoader(TensorDataset(ids[:64], labels[:64]), batch_size=16)
    return train, DataLoader(TensorDataset(ids[64:], labels[64:]), batch_size=32)


def test_fit_exports_the_best_checkpoint_of_a_hugging_face_model(tmp_path):
    pl.seed_everything(0)
    module = SentimentModule()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_acc", mode="max")
    export_cb = ModelExport(formats=["onnx", "torchscript"], dynamic_axes=TEXT_AXES["dynamic_axes"], strict=True)
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=3, callbacks=[checkpoint, export_cb], logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
    )  # fmt: skip
    trainer.fit(module, *_loaders())
    best = tmp_path / "ckpt" / checkpoint.best_model_path.rsplit("/", 1)[-1]
    stem = best.name.removesuffix(".ckpt")
    manifest = json.loads((best.parent / f"{stem}.export.json").read_text())
    assert manifest["checkpoint"] == best.name and manifest["ok"]
    assert manifest["outputs"]["schema"]["tree"]["class"].endswith("SequenceClassifierOutput")

    best_module = SentimentModule()
    best_module.load_state_dict(torch.load(best, weights_only=False)["state_dict"])
    ids = torch.randint(3, 99, (3, 11), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[2, 9:] = 0
    with torch.no_grad():
        want = best_module.eval()(ids, mask).logits
    for fmt in ("onnx", "torchscript.pt"):
        out = load(best.parent / f"{stem}.{fmt}")(ids, mask)
        assert type(out).__name__ == "SequenceClassifierOutput"
        torch.testing.assert_close(out.logits, want, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out["logits"], want, atol=1e-5, rtol=1e-4)
