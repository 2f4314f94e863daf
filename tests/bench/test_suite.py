"""The suite schema: unknown keys are errors, Retrain is the harness's own, Suppress is always there, and the
units are datasets × backbones × requests × seeds × methods plus the noise floor and the streams."""
from __future__ import annotations

from pathlib import Path

import pytest

from recunlearn.bench.suite import load_suite, noise_floor_seeds, reference_seed, unit_key, units
from recunlearn.config import ConfigError
from bench.tiny import tiny_suite

SUITES = Path(__file__).resolve().parents[2] / "benchmarks" / "suites"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


MINIMAL = """
name: t
datasets: [ml-100k]
backbones: [lightgcn]
requests: [random:0.01]
seeds: [0, 1, 2]
"""


def test_the_recorded_suites_load():
    quick = load_suite(SUITES / "quick.yaml")
    assert quick.pairs() == [("ml-100k", "lightgcn")] and quick.seeds == [0, 1, 2]
    assert quick.requests == ["random:0.01", "user:0.01", "adversarial:1.0"]
    assert [m.title for m in quick.methods] == ["finetune", "suppress", "unlearnrec (zero-shot)",
                                                "unlearnrec + fine-tune 1 epoch"]
    assert quick.methods[3].set == {"finetune_epochs": 1} and quick.noise_floor.retrains == 3
    standard = load_suite(SUITES / "standard.yaml")
    assert standard.pairs() == [("ml-1m", "lightgcn"), ("ml-1m", "sgl"), ("ml-1m", "simgcl"), ("gowalla", "lightgcn")]
    assert standard.streams[0].parts == 10
    run = standard.run_config("ml-1m", "sgl", 2)
    assert (run.train.batch_size, run.train.lr, run.train.patience, run.train.seed) == (8192, 0.01, 5, 2)


@pytest.mark.parametrize("baselines, dataset", [("baselines-ml1m.yaml", "ml-1m"), ("baselines-gowalla.yaml", "gowalla")])
def test_the_baseline_suites_train_what_the_standard_suite_trains(baselines, dataset):
    """The baseline tables sit beside the standard suite's rows: the same originals and Retrain references
    (one model-cache entry each), which holds only while both suites ask for the same training run."""
    standard, suite = load_suite(SUITES / "standard.yaml"), load_suite(SUITES / baselines)
    assert suite.pairs() == [(dataset, "lightgcn")] and suite.seeds == standard.seeds
    assert set(standard.requests) <= set(suite.requests)
    for seed in suite.seeds:
        assert suite.run_config(dataset, "lightgcn", seed) == standard.run_config(dataset, "lightgcn", seed)


@pytest.mark.parametrize("extra, fragment", [
    ("methods: [retrain]", "retrain is the reference"),
    ("methods: [nonesuch]", "unknown method 'nonesuch'"),
    ("train: {lrr: 0.1}", "train.lrr: unknown key"),
    ("train: {seed: 3}", "the training seed comes from `seeds`"),
    ("colour: blue", "colour: unknown key"),
    ("noise_floor: {retrains: 2}", "noise_floor.retrains"),
    ("methods: [{name: finetune, sett: {epochs: 2}}]", "sett: unknown key"),
    ("methods: [finetune, finetune]", "share a label"),
])
def test_suite_errors_name_the_key(tmp_path, extra, fragment):
    with pytest.raises(ConfigError, match="invalid Suite") as err:
        load_suite(write(tmp_path, MINIMAL + extra + "\n"))
    assert fragment in str(err.value)


def test_a_bad_request_spec_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="bad request spec 'random'"):
        load_suite(write(tmp_path, MINIMAL.replace("[random:0.01]", "[random]")))


def test_suppress_is_added_to_every_suite_and_stream(tmp_path):
    suite = load_suite(write(tmp_path, MINIMAL + "methods: [finetune]\nstreams: [{request: random:0.01, parts: 4, "
                                                 "methods: [finetune]}]\n"))
    assert [m.name for m in suite.methods] == ["finetune", "suppress"]
    assert [m.name for m in suite.streams[0].methods] == ["finetune", "suppress"]
    listed = load_suite(write(tmp_path, MINIMAL + "methods: [suppress, finetune]\n"))
    assert [m.name for m in listed.methods] == ["suppress", "finetune"]


def test_units_enumerate_the_settings_the_noise_floor_and_the_streams():
    suite = tiny_suite()   # 1 dataset x 1 backbone x 2 requests x 2 seeds; finetune + suppress; stream of 4
    planned = units(suite)
    per_setting = 1 + 1 + 2                      # reference, original, finetune, suppress
    noise = 2 * suite.noise_floor.retrains        # per request
    stream = 1 + 2                                # retrain, finetune, suppress on seed 0
    assert len(planned) == 2 * 2 * per_setting + noise + stream
    assert noise_floor_seeds(suite) == [1, 2, 3]
    for unit in planned:
        if unit.role in ("reference", "noise_floor") or (unit.role == "stream" and unit.method.name == "retrain"):
            assert unit.retrain_seed != unit.seed
        if unit.role == "reference":
            assert unit.retrain_seed == reference_seed(unit.seed)
    keys = [unit_key(unit, suite, "code") for unit in planned]
    assert len(set(keys)) == len(keys)            # every unit has its own key
    assert unit_key(planned[0], suite, "code") != unit_key(planned[0], suite, "other code")


def test_a_narrowed_suite_keeps_the_unit_keys_of_the_whole():
    """Running part of a suite (one request, no streams) writes lines that the whole suite resumes from."""
    from recunlearn.bench.suite import load_suite, narrowed, unit_key, units
    from recunlearn.config import ConfigError

    whole = load_suite("benchmarks/suites/standard.yaml")
    part = narrowed(whole, ["ml-1m"], ["lightgcn"], ["adversarial:1.0"], streams=False)
    assert part.pairs() == [("ml-1m", "lightgcn")] and part.requests == ["adversarial:1.0"] and not part.streams
    whole_keys = {unit_key(unit, whole, "code") for unit in units(whole)}
    part_units = units(part)
    assert part_units and all(unit.request == "adversarial:1.0" for unit in part_units)
    assert {unit_key(unit, part, "code") for unit in part_units} <= whole_keys
    with pytest.raises(ConfigError, match="request random:0.5 is not in suite"):
        narrowed(whole, requests=["random:0.5"])


def test_running_some_seeds_splits_the_units_without_changing_them():
    """--seed: the seeds' units are a partition of the whole (the noise floor and the streams with their own
    seed), with the whole suite's keys, so that two processes can share a suite's work."""
    from recunlearn.bench.suite import load_suite, unit_key, units
    from recunlearn.config import ConfigError

    suite = load_suite("benchmarks/suites/standard.yaml")
    whole = [unit_key(unit, suite, "code") for unit in units(suite)]
    first, rest = units(suite, [0]), units(suite, [1, 2])
    assert {unit.seed for unit in first} == {0} and {unit.seed for unit in rest} == {1, 2}
    assert any(unit.role == "noise_floor" for unit in first) and not any(unit.role == "noise_floor" for unit in rest)
    assert any(unit.role == "stream" for unit in rest)
    assert sorted(unit_key(unit, suite, "code") for unit in first + rest) == sorted(whole)
    with pytest.raises(ConfigError, match="seed 7 is not in suite"):
        units(suite, [7])


def test_a_dataset_entry_may_be_your_own_file(tmp_path):
    """Your own data wherever a dataset name is accepted: a suite entry with a `path` loads that file."""
    from recunlearn.bench.setting import registry_loader
    from recunlearn.bench.suite import Suite

    rows = ["user,item"] + [f"u{u},i{(u * 7 + k) % 30}" for u in range(20) for k in range(8)]
    (tmp_path / "mine.csv").write_text("\n".join(rows) + "\n")
    suite = Suite.model_validate({"name": "own", "datasets": [{"name": "mine", "path": str(tmp_path / "mine.csv")}],
                                  "backbones": ["lightgcn"], "requests": ["random:0.1"], "seeds": [0]})
    run = suite.run_config("mine", "lightgcn", 0)
    assert run.data.path == str(tmp_path / "mine.csv")
    data = registry_loader("mine", run.data)
    assert data.name == "mine" and data.n_users == 20 and len(data.train) + len(data.valid) + len(data.test) == 160


def test_a_method_filter_keeps_each_settings_reference_and_original_and_the_whole_suites_keys():
    """--method: only the chosen entries run (in the settings and the streams), Suppress is not added back, and
    the lines resume and report as the whole suite's."""
    from recunlearn.bench.suite import load_suite, narrowed, unit_key, units
    from recunlearn.config import ConfigError

    whole = load_suite("benchmarks/suites/standard.yaml")
    part = narrowed(whole, methods=["unlearnrec (zero-shot)"])
    planned = units(part)
    assert {unit.label for unit in planned if unit.role in ("method", "stream") and unit.method.name != "retrain"} \
        == {"unlearnrec (zero-shot)"}
    assert {unit.role for unit in planned} == {"reference", "original", "method", "noise_floor", "stream"}
    assert all(len(stream.methods) == 1 for stream in part.streams)
    whole_keys = {unit_key(unit, whole, "code") for unit in units(whole)}
    assert {unit_key(unit, part, "code") for unit in planned} <= whole_keys
    by_name = narrowed(whole, methods=["suppress"], streams=True)
    assert [m.title for m in by_name.methods] == ["suppress"]
    assert [[m.title for m in stream.methods] for stream in by_name.streams] == [["suppress"]]   # streams run it too
    with pytest.raises(ConfigError, match=r"method scif is not in suite 'standard'.*unlearnrec \(zero-shot\)"):
        narrowed(whole, methods=["scif"])


def test_leaving_the_noise_floor_out_drops_its_retrains_only():
    from recunlearn.bench.suite import load_suite, unit_key, units

    suite = load_suite("benchmarks/suites/standard.yaml")
    whole = units(suite)
    without = units(suite, noise_floor=False)
    assert [u for u in whole if u.role != "noise_floor"] == without
    assert len(whole) - len(without) == 4 * 3 * suite.noise_floor.retrains   # 4 (dataset, backbone) x 3 requests
    assert {unit_key(u, suite, "code") for u in without} < {unit_key(u, suite, "code") for u in whole}


def test_a_suite_that_would_time_the_retrains_on_a_gpu_is_refused(tmp_path):
    from recunlearn.bench.suite import load_suite
    from recunlearn.config import ConfigError

    suite = tmp_path / "gpu.yaml"
    suite.write_text("name: gpu\ndatasets: [ml-100k]\nbackbones: [lightgcn]\nrequests: [random:0.01]\nseeds: [0]\n"
                     "methods: [finetune]\ntrain: {device: cuda}\n")
    with pytest.raises(ConfigError, match="train.device=cuda: the harness times every method on the CPU"):
        load_suite(suite)
