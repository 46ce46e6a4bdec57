"""The command line is generated from TrainConfig's field metadata, imports lazily, and says its version."""

from __future__ import annotations

import dataclasses

from seglab import __version__, cli
from seglab.config import TrainConfig, choices_of, option
from seglab.errors import SeglabError


def test_every_train_option_has_help_and_lists_its_choices(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside names such as oxford-pets
    try:
        cli.main(["train", "-h"])
    except SystemExit as e:
        assert e.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata["help"], f"{f.name} has no help"
        if f.metadata["flag"]:
            assert "--" + f.name.replace("_", "-") in out
            if choices_of(f):
                assert "choices: " + ", ".join(choices_of(f)) in out, f.name
    for listed in ("adam, adamw, sgd", "step, cosine, onecycle, poly, none", "vit, vit-p8", "segnet-dsc-head",
                   "oxford-pets, folder", "nearest, bilinear, bicubic, lanczos", "auto, cpu, cuda, mps"):
        assert listed in out, listed


def test_validate_follows_the_metadata():
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name, f in fields.items():
        choices = choices_of(f)
        if choices and f.metadata["pattern"] is None:
            try:
                dataclasses.replace(TrainConfig(dataset="synthetic"), **{name: "no-such-choice"}).validate()
            except SeglabError as e:
                assert name in str(e) and choices[0] in str(e)
            else:
                raise AssertionError(f"{name} accepted a value outside its choices")
        if f.metadata["low"] is not None and not isinstance(f.default, bool):
            below = f.metadata["low"] - 1
            value = ([below] * f.metadata["length"][0] if f.metadata["length"]  # a list field: each number checked
                     else type(f.default or 1)(below))
            try:
                dataclasses.replace(TrainConfig(dataset="synthetic"), **{name: value}).validate()
            except SeglabError as e:
                assert name in str(e)
            else:
                raise AssertionError(f"{name} accepted {below}")


def test_a_new_field_with_metadata_becomes_a_flag(monkeypatch, capsys):
    """Adding a field with option(...) is the only step: the flag, its help and the check follow."""
    @dataclasses.dataclass
    class Extended(TrainConfig):
        ema_decay: float = option(0.0, "EMA decay of the weights (0: off)", low=0, high=1)

    import seglab.config

    monkeypatch.setattr(seglab.config, "TrainConfig", Extended)
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--ema-decay", "0.5"])
    assert args.ema_decay == 0.5
    try:
        parser.parse_args(["train", "-h"])
    except SystemExit:
        pass
    assert "EMA decay of the weights" in capsys.readouterr().out
    try:
        Extended(dataset="synthetic", ema_decay=2.0).validate()
    except SeglabError as e:
        assert "ema_decay" in str(e)
    else:
        raise AssertionError("ema_decay 2.0 was accepted")


def test_version(capsys):
    try:
        cli.main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert capsys.readouterr().out.strip() == f"seglab {__version__}"


def test_the_demo_preset_is_a_recipe():
    from seglab.config import RECIPES, apply_recipe

    cfg = TrainConfig.from_dict(apply_recipe({"out_dir": "x"}, "demo"))
    assert cfg.recipe == "demo" and cfg.dataset == "synthetic" and cfg.model_options == RECIPES["demo"]["model_options"]
