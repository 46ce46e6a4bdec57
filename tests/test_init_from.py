"""`seglab train --init-from`: fine-tuning from HF Segformer weights and from a seglab checkpoint."""

import pytest
import torch
from safetensors.torch import load_file

from seglab import cli

transformers = pytest.importorskip("transformers")

ARGS = ["train", "--dataset", "synthetic", "--image-size", "64", "--train-samples", "8", "--val-samples", "4",
        "--epochs", "1", "--batch-size", "4", "--num-vis", "2", "--quiet", "--lr", "1e-12", "--scheduler", "none"]


def test_finetune_from_hf_segformer_folder(tmp_path):
    torch.manual_seed(0)
    config = transformers.SegformerConfig(num_labels=3)  # B0's shape
    hf = transformers.SegformerForSemanticSegmentation(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    assert cli.main(ARGS + ["--model", "segformer-b0", "--init-from", str(tmp_path / "hf"),
                            "--out-dir", str(tmp_path / "runs"), "--run-name", "ft"]) == 0
    ours = load_file(tmp_path / "runs" / "ft" / "checkpoints" / "last.safetensors")
    # With lr 1e-12 the single epoch leaves the imported weights in place: they must be HF's.
    theirs = hf.state_dict()
    v4_name = "segformer.encoder.patch_embeddings.0.proj.weight"
    v5_name = "segformer.stages.0.patch_embeddings.proj.weight"
    first = theirs[v4_name] if v4_name in theirs else theirs[v5_name]
    conv = [v for k, v in ours.items() if v.shape == first.shape and k.endswith("weight")]
    assert any(torch.allclose(v, first, atol=1e-6) for v in conv)
    classifier = theirs["decode_head.classifier.weight"]
    assert any(torch.allclose(v, classifier, atol=1e-6) for k, v in ours.items() if v.shape == classifier.shape)


def test_init_from_seglab_checkpoint_and_wrong_file(tmp_path, capsys):
    base = ARGS + ["--model", "vit", "-O", "embed_size=32", "-O", "num_blocks=1", "-O", "num_heads=2",
                   "-O", "patch_size=8", "--out-dir", str(tmp_path / "runs")]
    assert cli.main(base + ["--run-name", "a", "--lr", "0.01"]) == 0
    src = tmp_path / "runs" / "a" / "checkpoints" / "last.safetensors"
    assert cli.main(base + ["--run-name", "b", "--init-from", str(src)]) == 0
    a, b = load_file(src), load_file(tmp_path / "runs" / "b" / "checkpoints" / "last.safetensors")
    assert torch.allclose(a["patch_embed.weight"], b["patch_embed.weight"], atol=1e-6)
    (tmp_path / "junk.bin").write_bytes(b"not weights")
    assert cli.main(base + ["--run-name", "c", "--init-from", str(tmp_path / "junk.bin")]) == 2
    assert "junk.bin" in capsys.readouterr().err
