"""The training loop on ml-100k: it learns, stops early with the best weights restored, is seeded, resumes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recunlearn.config import load_config
from recunlearn.data.graph import build_graph
from recunlearn.data.interactions import Dataset, IdMap, Interactions
from recunlearn.data.registry import load_dataset
from recunlearn.models.registry import build_model
from recunlearn.train.checkpoint import load_checkpoint, read_meta
from recunlearn.train.config import RunConfig
from recunlearn.train.trainer import TRAINER_STATE, Trainer

# lr 0.01, batch 4096: about half a second per ml-100k epoch. Measured best valid Recall@20 after 4-5 epochs
# is 0.25-0.27 over seeds 0-2 (an untrained model: 0.013); 0.2 leaves a margin.
FAST = ["train.lr=0.01", "train.batch_size=4096"]
RECALL_AFTER_SHORT_RUN = 0.2


def run_config(*overrides: str) -> RunConfig:
    return load_config(RunConfig, overrides=[*FAST, *overrides])


@pytest.fixture(scope="module")
def ml100k(data_root) -> Dataset:
    return load_dataset("ml-100k", data_root)


@pytest.fixture(scope="module")
def short_run(ml100k, tmp_path_factory):
    """One LightGCN run shared by the tests below: up to 10 epochs, patience 2, checkpointing every epoch."""
    folder = tmp_path_factory.mktemp("short_run") / "ckpt"
    trainer = Trainer(run_config("train.epochs=10", "train.patience=2"), progress=False, checkpoint_dir=folder)
    model, result = trainer.fit(ml100k)
    return trainer, model, result, folder


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def scalar_history(history: list[dict]) -> list[dict]:
    """History without the wall-clock field."""
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


# ------------------------------------------------------------------------------------------------- learning

def test_short_run_improves_validation_recall_over_the_untrained_model(ml100k, short_run):
    trainer, _, result, _ = short_run
    untrained = build_model(trainer.run.model, ml100k.n_users, ml100k.n_items).attach(build_graph(ml100k.train))
    before = trainer.validate(untrained, ml100k)["Recall@20"]
    assert before < 0.05
    assert result.best_metric > RECALL_AFTER_SHORT_RUN
    assert result.best_metric > 5 * before
    losses = [record["loss"] for record in result.history]
    assert losses[0] < 0.69 and losses[-1] < losses[0] - 0.1   # BPR starts near log 2 and goes down
    assert all(np.isfinite(losses))


def test_history_records_every_epoch_with_the_validation_metrics(short_run):
    trainer, _, result, _ = short_run
    assert [r["epoch"] for r in result.history] == list(range(1, result.epochs_run + 1))
    for record in result.history:
        assert {"loss", "seconds", "Recall@20", "NDCG@20", "Recall@10", "HR@10"} <= set(record)
        assert "users" not in record
    assert result.best_metric == max(r["Recall@20"] for r in result.history)
    assert result.history[result.best_epoch - 1]["Recall@20"] == result.best_metric
    assert result.seconds > 0


# ---------------------------------------------------------------------------------------------- early stop

def test_early_stopping_stops_after_patience_evaluations_without_improvement(short_run):
    trainer, _, result, _ = short_run
    patience = trainer.cfg.patience
    assert result.epochs_run < trainer.cfg.epochs                 # it did stop early
    assert result.epochs_run == result.best_epoch + patience     # eval_every = 1
    last = [r["Recall@20"] for r in result.history[-patience:]]
    assert all(value <= result.best_metric for value in last)
    # every evaluation before the stop that beat all earlier ones reset the count: no earlier stop was due
    best, bad = -1.0, 0
    for record in result.history[:-1]:
        best, bad = (record["Recall@20"], 0) if record["Recall@20"] > best else (best, bad + 1)
        assert bad < patience


def test_early_stopping_restores_the_best_weights(ml100k, short_run):
    trainer, model, result, _ = short_run
    assert result.best_epoch < result.epochs_run                 # the last epoch is not the best one
    again = trainer.validate(model, ml100k)
    assert again["Recall@20"] == result.best_metric
    assert again["NDCG@20"] == result.history[result.best_epoch - 1]["NDCG@20"]
    assert not model.training


class ScriptedValidation:
    """Stands in for Trainer.validate: returns the scripted metric and remembers the weights it saw."""

    def __init__(self, values):
        self.values, self.seen = list(values), []

    def __call__(self, model, dataset):
        self.seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"Recall@20": self.values[len(self.seen) - 1]}


def tiny_dataset(seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    n_users, n_items = 20, 30
    users, items = np.nonzero(rng.random((n_users, n_items)) < 0.3)
    data = Interactions.from_arrays(users, items, n_users, n_items)
    split = rng.random(len(data))
    return Dataset("tiny", data.select(split < 0.8), data.select((split >= 0.8) & (split < 0.9)),
                   data.select(split >= 0.9), IdMap(np.arange(n_users)), IdMap(np.arange(n_items)))


@pytest.mark.parametrize("values, patience, stop, best", [
    ([0.1, 0.3, 0.2, 0.25, 0.3, 0.5], 3, 5, 2),   # an equal value is no improvement
    ([0.1, 0.3, 0.2, 0.4, 0.3, 0.2, 0.1], 2, 6, 4),  # an improvement resets the count
    ([0.5, 0.4], 1, 2, 1),
    ([0.1, 0.2, 0.3, 0.4], 1, 4, 4),                # never stalls: runs all epochs
])
def test_early_stopping_rule_with_scripted_metrics(monkeypatch, values, patience, stop, best):
    scripted = ScriptedValidation(values)
    trainer = Trainer(run_config(f"train.epochs={len(values) if stop == len(values) else len(values) + 3}",
                                 f"train.patience={patience}", "model.dim=8"), progress=False)
    monkeypatch.setattr(trainer, "validate", scripted)
    model, result = trainer.fit(tiny_dataset())
    assert (result.epochs_run, result.best_epoch, result.best_metric) == (stop, best, values[best - 1])
    assert len(scripted.seen) == stop
    assert same_weights(model.state_dict(), scripted.seen[best - 1])   # restored to the best epoch's weights
    assert not same_weights(model.state_dict(), scripted.seen[-1]) or best == stop


def test_validation_every_few_epochs_and_at_the_last_one(monkeypatch):
    scripted = ScriptedValidation([0.1, 0.2, 0.15])
    trainer = Trainer(run_config("train.epochs=5", "train.eval_every=2", "model.dim=8"), progress=False)
    monkeypatch.setattr(trainer, "validate", scripted)
    _, result = trainer.fit(tiny_dataset())
    assert [("Recall@20" in r) for r in result.history] == [False, True, False, True, True]
    assert (result.best_epoch, result.epochs_run) == (4, 5)


@pytest.mark.parametrize("min_lr, last_lr", [(0.0, 0.0025), (0.004, 0.004)])
def test_learning_rate_decays_when_validation_stalls(monkeypatch, min_lr, last_lr):
    # best, best, stall, stall -> x0.5; best, stall, stall -> x0.5 again (not below min_lr)
    scripted = ScriptedValidation([0.1, 0.3, 0.2, 0.2, 0.4, 0.3, 0.3, 0.1])
    trainer = Trainer(run_config("train.epochs=8", "train.patience=5", "train.lr_decay=0.5",
                                 "train.lr_decay_patience=1", f"train.min_lr={min_lr}", "model.dim=8"),
                      progress=False)
    monkeypatch.setattr(trainer, "validate", scripted)
    _, result = trainer.fit(tiny_dataset())
    assert [r["lr"] for r in result.history] == pytest.approx([0.01] * 4 + [0.005] * 3 + [last_lr])
    assert result.best_epoch == 5


def test_constant_learning_rate_by_default(short_run):
    _, _, result, _ = short_run
    assert {r["lr"] for r in result.history} == {0.01}


# ------------------------------------------------------------------------------------------------- seeding

def test_same_seed_gives_identical_weights_and_another_seed_does_not(ml100k):
    def weights(seed: int) -> dict:
        model, _ = Trainer(run_config("train.epochs=1", f"train.seed={seed}"), progress=False).fit(ml100k)
        return model.state_dict()

    first, second, other = weights(5), weights(5), weights(6)
    assert same_weights(first, second)
    assert not same_weights(first, other)


@pytest.mark.parametrize("name", ["mf", "sgl", "simgcl"])
def test_every_backbone_trains_reproducibly(name):
    data = tiny_dataset(1)

    def fit():
        return Trainer(run_config("train.epochs=2", f"model.name={name}", "model.dim=8"), progress=False).fit(data)

    (a, ra), (b, rb) = fit(), fit()
    assert same_weights(a.state_dict(), b.state_dict())
    assert scalar_history(ra.history) == scalar_history(rb.history)
    assert all(np.isfinite(r["loss"]) for r in ra.history)


# -------------------------------------------------------------------------------------------------- resume

def test_resume_continues_from_the_saved_epoch(ml100k, short_run, tmp_path):
    """Stopped after 2 epochs, resumed to 4: the same history as one uninterrupted run, no restart."""
    folder = tmp_path / "ckpt"
    first_trainer = Trainer(run_config("train.epochs=2", "train.patience=2"), progress=False, checkpoint_dir=folder)
    _, first = first_trainer.fit(ml100k)
    assert first.epochs_run == 2
    assert read_meta(folder)["history"] == first.history

    epochs_trained = []
    resumed_trainer = Trainer(run_config("train.epochs=4", "train.patience=2"), progress=False, checkpoint_dir=folder)
    original = resumed_trainer.train_epoch

    def counting(model, optimizer, dataset, rng, gen, epoch):
        epochs_trained.append(epoch + 1)
        return original(model, optimizer, dataset, rng, gen, epoch)

    resumed_trainer.train_epoch = counting
    _, resumed = resumed_trainer.fit(ml100k, resume=True)
    assert epochs_trained == [3, 4]
    assert resumed.epochs_run == 4 and len(resumed.history) == 4
    assert resumed.history[:2] == first.history                  # the first epochs are kept, not redone
    # bit-identical to the uninterrupted run of the same config (same losses and metrics every epoch)
    _, _, uninterrupted, _ = short_run
    assert uninterrupted.epochs_run >= 4
    assert scalar_history(resumed.history) == scalar_history(uninterrupted.history[:4])
    assert resumed.seconds >= first.seconds


def test_resume_without_saved_state_is_a_clear_error(ml100k, tmp_path):
    trainer = Trainer(run_config("train.epochs=1"), progress=False, checkpoint_dir=tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        trainer.fit(ml100k, resume=True)


def test_progress_checkpoint_holds_the_best_weights_and_the_resume_state(short_run):
    _, model, result, folder = short_run
    loaded, run, data, meta = load_checkpoint(folder)
    assert same_weights(loaded.state_dict(), model.state_dict())    # the best epoch, not the last
    assert meta["metrics"]["valid"]["epoch"] == result.best_epoch
    assert meta["metrics"]["valid"]["Recall@20"] == result.best_metric
    assert (folder / f"{TRAINER_STATE}.pt").is_file()
    state = torch.load(folder / f"{TRAINER_STATE}.pt", weights_only=True)
    # epoch, best epoch, evaluations without improvement (= patience: the run stopped on it)
    assert state["scalars"].tolist() == [result.epochs_run, result.best_epoch, run.train.patience]
    json.dumps(meta)   # the whole meta is plain JSON


@pytest.mark.parametrize("name", ["mf", "lightgcn", "sgl", "simgcl"])
def test_resumed_run_equals_the_uninterrupted_run_for_every_backbone(name, tmp_path):
    """Random state too is restored: SGL's views, SimGCL's noise and the negative sampler continue where they were."""
    data = tiny_dataset(2)
    # lr decays after every stalled validation, so the scheduler's state must be restored too
    config = ("train.patience=10", "train.lr_decay=0.5", "train.lr_decay_patience=0", f"model.name={name}",
              "model.dim=8")
    full_model, full = Trainer(run_config("train.epochs=4", *config), progress=False).fit(data)
    Trainer(run_config("train.epochs=2", *config), progress=False, checkpoint_dir=tmp_path).fit(data)
    # something else draws from torch's global generator in between (another model, another test)
    torch.rand(1000)
    model, resumed = Trainer(run_config("train.epochs=4", *config), progress=False,
                             checkpoint_dir=tmp_path).fit(data, resume=True)
    assert scalar_history(resumed.history) == scalar_history(full.history)
    assert same_weights(model.state_dict(), full_model.state_dict())
    assert len({r["lr"] for r in full.history}) > 1
