"""A method's saved working state keeps the modality constraints applied since `prepare`: loaded again, it
continues from exactly the data it left (withdrawn rows included), and the next constraint adds to them."""
from __future__ import annotations

import numpy as np

from conformance.conftest import generated_dataset
from recunlearn.data.requests import modality_request
from recunlearn.train.config import RunConfig
from recunlearn.train.trainer import Trainer
from recunlearn.unlearn.registry import build_unlearner, unlearner_class

RUN = RunConfig.model_validate({"model": {"name": "freedom", "dim": 16, "knn_k": 3},
                                "train": {"epochs": 5, "batch_size": 128, "lr": 0.02}})


def test_a_saved_state_continues_with_its_withdrawals(tmp_path):
    data = generated_dataset()
    model, _ = Trainer(RUN, progress=False, validate=False).fit(data)
    unlearner = build_unlearner("reverse-bpr", {"max_epochs": 1}, run=RUN, progress=False).prepare(model.clone(), data)
    first = modality_request(data, "image", 0.2, seed=0)
    result = unlearner.unlearn(first)
    loaded = unlearner_class("reverse-bpr").load(unlearner.save(tmp_path / "state"), model.clone(), data, run=RUN,
                                                 progress=False)
    assert loaded.state.dataset.hash == result.dataset.hash
    assert np.array_equal(loaded.state.dataset.withdrawn["image"], first.withdrawn["image"])
    second = modality_request(data, "image", 0.2, seed=1)
    later = loaded.unlearn(second)
    assert np.array_equal(later.dataset.withdrawn["image"],
                          np.union1d(first.withdrawn["image"], second.withdrawn["image"]))
