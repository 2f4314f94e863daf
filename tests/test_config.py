"""Typed configs: unknown keys are errors naming the key, typed `--set` overrides, YAML files, validation."""
from __future__ import annotations

import pydantic
import pytest

from recunlearn.config import ConfigError, apply_overrides, load_config, parse_override
from recunlearn.models.sgl import SGLConfig
from recunlearn.train.config import RunConfig, TrainConfig


def error_of(overrides=None, file=None, base=None, cls=RunConfig) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(cls, file, overrides, base=base)
    return str(err.value)


def write(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------- unknown keys

@pytest.mark.parametrize("key, shown", [
    ("trian.lr=0.1", "trian"),
    ("train.lrr=0.1", "train.lrr"),
    ("model.dimm=32", "model.dimm"),
    ("data.seeed=1", "data.seeed"),
    ("eval.k=5", "eval.k"),
    ("learning_rate=0.1", "learning_rate"),
])
def test_unknown_keys_are_errors_naming_the_key(key, shown):
    message = error_of([key])
    assert f"{shown}: unknown key" in message


def test_unknown_key_of_a_chosen_backbone_names_it_without_the_union_tag():
    for name in ("mf", "lightgcn", "sgl", "simgcl"):
        message = error_of([f"model.name={name}", "model.dimm=3"])
        assert "model.dimm: unknown key" in message
        assert f"model.{name}." not in message
    # a key that exists on another backbone only
    assert "model.layers: unknown key" in error_of(["model.name=mf", "model.layers=2"])


def test_unknown_key_in_a_yaml_file_is_an_error(tmp_path):
    path = write(tmp_path, "train:\n  epochs: 3\n  patiense: 2\n")
    assert "train.patiense: unknown key" in error_of(file=path)


def test_every_problem_is_reported_at_once():
    message = error_of(["train.lr=-1", "train.epochs=0", "eval.kss=[1]"])
    assert "train.lr" in message and "train.epochs" in message and "eval.kss" in message


def test_unknown_model_name_lists_the_known_ones():
    message = error_of(["model.name=ngcf"])
    assert "'ngcf'" in message
    assert all(name in message for name in ("mf", "lightgcn", "sgl", "simgcl"))


def test_strict_configs_forbid_unknown_keys_on_construction_and_assignment():
    with pytest.raises(pydantic.ValidationError):
        TrainConfig(epochz=3)
    config = TrainConfig()
    with pytest.raises(pydantic.ValidationError):
        config.lr = -0.5
    config.lr = 0.05
    assert config.lr == 0.05


# ------------------------------------------------------------------------------------------------ overrides

@pytest.mark.parametrize("text, path, value, kind", [
    ("train.epochs=7", ["train", "epochs"], 7, int),
    ("train.lr=0.005", ["train", "lr"], 0.005, float),
    ("train.lr=1e-3", ["train", "lr"], 0.001, float),
    ("train.lr=5E-4", ["train", "lr"], 0.0005, float),
    ("eval.ks=[5, 10, 20]", ["eval", "ks"], [5, 10, 20], list),
    ("train.deterministic=true", ["train", "deterministic"], True, bool),
    ("data.name=ml-1m", ["data", "name"], "ml-1m", str),
    ("train.metric=NDCG@20", ["train", "metric"], "NDCG@20", str),
    ("model.name = sgl", ["model", "name"], "sgl", str),
    ("train.threads=", ["train", "threads"], "", str),
    ("a.b=x=y", ["a", "b"], "x=y", str),
])
def test_override_values_keep_their_types(text, path, value, kind):
    parsed_path, parsed = parse_override(text)
    assert parsed_path == path
    assert parsed == value and type(parsed) is kind


def test_overrides_reach_the_typed_config():
    run = load_config(RunConfig, overrides=["train.epochs=7", "train.lr=1e-3", "eval.ks=[5,50]", "train.metric=Recall@50",
                                            "model.name=sgl", "model.drop_ratio=0.25", "model.dim=32"])
    assert run.train.epochs == 7 and type(run.train.epochs) is int
    assert run.train.lr == 0.001 and type(run.train.lr) is float
    assert run.eval.ks == [5, 50]
    assert isinstance(run.model, SGLConfig)
    assert (run.model.drop_ratio, run.model.dim, run.model.layers) == (0.25, 32, 3)


def test_model_override_without_a_name_configures_the_default_backbone():
    run = load_config(RunConfig, overrides=["model.dim=32"])
    assert run.model.name == "lightgcn" and run.model.dim == 32


def test_later_overrides_win_and_nested_ones_merge():
    data = apply_overrides({"train": {"lr": 0.1, "epochs": 5}}, ["train.lr=0.2", "train.lr=0.3", "x.y.z=1"])
    assert data == {"train": {"lr": 0.3, "epochs": 5}, "x": {"y": {"z": 1}}}


@pytest.mark.parametrize("text, fragment", [
    ("train.lr", "must look like key=value"),
    ("=3", "empty key"),
    ("train..lr=3", "empty part"),
    ("eval.ks=[1, 2", "not valid YAML"),
])
def test_malformed_overrides_are_config_errors(text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_override(text)
    assert fragment in error_of([text])


def test_defaults_are_documented_values():
    run = load_config(RunConfig)
    assert run == RunConfig()
    assert (run.data.name, run.model.name, run.model.dim, run.model.layers) == ("ml-100k", "lightgcn", 64, 3)
    assert (run.train.metric, run.train.patience, run.eval.ks) == ("Recall@20", 10, [10, 20])


# --------------------------------------------------------------------------------------------- YAML files

def test_yaml_file_then_overrides_override_wins(tmp_path):
    path = write(tmp_path, "model:\n  name: simgcl\n  eps: 0.2\ntrain:\n  lr: 0.01\n  epochs: 20\n")
    run = load_config(RunConfig, path, ["train.lr=0.002", "model.eps=0.05"])
    assert run.model.name == "simgcl"
    assert run.model.eps == 0.05            # override beats the file
    assert run.train.lr == 0.002
    assert run.train.epochs == 20           # from the file
    assert run.train.batch_size == 2048     # default


def test_yaml_file_beats_base_values_and_merges_with_them(tmp_path):
    path = write(tmp_path, "train:\n  epochs: 4\n")
    run = load_config(RunConfig, path, base={"train": {"epochs": 9, "lr": 0.02}, "data": {"name": "ml-1m"}})
    assert (run.train.epochs, run.train.lr, run.data.name) == (4, 0.02, "ml-1m")


def test_empty_yaml_file_gives_the_defaults(tmp_path):
    assert load_config(RunConfig, write(tmp_path, "")) == RunConfig()


@pytest.mark.parametrize("text, fragment", [
    ("- 1\n- 2\n", "mapping"),
    ("train: [1, 2\n", "not valid YAML"),
    ("train: 3\n", "train: Input should be a valid dictionary"),
])
def test_bad_yaml_files_are_config_errors(tmp_path, text, fragment):
    assert fragment in error_of(file=write(tmp_path, text))


def test_missing_yaml_file_is_a_config_error(tmp_path):
    assert "does not exist" in error_of(file=tmp_path / "nope.yaml")


# ------------------------------------------------------------------------------------------ invalid values

@pytest.mark.parametrize("override, field", [
    ("train.lr=-0.001", "train.lr"),
    ("train.lr=0", "train.lr"),
    ("train.epochs=0", "train.epochs"),
    ("train.epochs=2.5", "train.epochs"),
    ("train.batch_size=-1", "train.batch_size"),
    ("train.patience=0", "train.patience"),
    ("data.valid_ratio=1.5", "data.valid_ratio"),
    ("eval.ks=[10, ten]", "eval.ks.1"),
    ("model.dim=big", "model.dim"),
])
def test_invalid_values_are_rejected_with_the_field_name(override, field):
    message = error_of([override])
    assert message.startswith("invalid RunConfig: ")
    assert f"{field}: " in message


def test_round_trip_through_json_keeps_the_backbone():
    run = load_config(RunConfig, overrides=["model.name=sgl", "model.ssl_weight=0.3"])
    again = RunConfig.model_validate(run.model_dump(mode="json"))
    assert again == run and isinstance(again.model, SGLConfig)
