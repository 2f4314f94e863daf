"""Training on a GPU (train.device=cuda): the steps and validation run there and the fitted model comes back to
the CPU, where unlearning, the audit and serving run. The GPU tests skip on a machine without CUDA; the checks
of the settings run everywhere."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist

from generated import taste_groups
from rank_helpers import backend_and_device
from recunlearn.train.checkpoint import load_checkpoint
from recunlearn.train.config import RunConfig, TrainConfig
from recunlearn.train.distributed import Ranks
from recunlearn.train.launch import run_on_ranks
from recunlearn.train.trainer import Trainer

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU and a CUDA build of torch")


def run_config(model: str = "lightgcn", **train) -> RunConfig:
    return RunConfig.model_validate({"model": {"name": model, "dim": 16}, "eval": {"ks": [5]},
                                     "train": {"epochs": 4, "batch_size": 64, "lr": 0.02, "patience": 2,
                                               "metric": "NDCG@5", **train}})


@pytest.fixture(scope="module")
def data():
    return taste_groups(60, 40, 12, seed=0, name="device")


# --- the settings, on every machine --------------------------------------------------------------------------

def test_an_unknown_device_is_refused_with_the_names_that_work():
    with pytest.raises(ValueError, match="train.device='gpu' is not a device.*write cpu, cuda"):
        TrainConfig(device="gpu")
    assert TrainConfig(device="cuda:1").device == "cuda:1"


def test_backbones_that_keep_state_outside_their_parameters_stay_on_the_cpu():
    with pytest.raises(ValueError, match="freedom trains on the CPU only"):
        RunConfig.model_validate({"model": {"name": "freedom"}, "train": {"device": "cuda"}})


def test_ranks_on_a_numbered_gpu_are_refused():
    with pytest.raises(ValueError, match="one GPU each, rank r GPU r; write train.device=cuda"):
        run_config(device="cuda:1", nproc=2)


def test_more_cuda_ranks_than_gpus_are_refused_before_any_process_starts():
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=f"{gpus + 1} ranks on CUDA need one GPU each, but torch sees {gpus}"):
        run_on_ranks(print, gpus + 1, device="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_fails_before_any_epoch_and_writes_nothing(data, tmp_path):
    folder = tmp_path / "ckpt"
    with pytest.raises(ValueError, match="sees no CUDA GPU here.*train.device=cpu"):
        Trainer(run_config(device="cuda"), progress=False, checkpoint_dir=folder).fit(data)
    assert not folder.exists()


def test_a_run_moves_to_another_device_validated_like_any_run():
    run = run_config(device="cuda")
    assert run.on_device(None) is run and run.on_device("cuda") is run
    moved = run.on_device("cpu")
    assert moved.train.device == "cpu" and run.train.device == "cuda"
    assert moved.model_dump(exclude={"train": {"device"}}) == run.model_dump(exclude={"train": {"device"}})
    with pytest.raises(ValueError, match="train.device='gpu' is not a device"):
        run.on_device("gpu")
    with pytest.raises(ValueError, match="ranks take one GPU each"):
        run_config(nproc=2).on_device("cuda:1")


# --- on a GPU ------------------------------------------------------------------------------------------------

@requires_cuda
@pytest.mark.parametrize("model", ["mf", "lightgcn", "sgl"])
def test_cuda_steps_follow_the_cpu_steps(data, model):
    """The same seeded initial weights, batches and (SGL) edge-dropout views: after four fixed epochs the GPU's
    weights are the CPU's up to float summation order. A batch left on the CPU, a view drawn with another
    generator or a model initialised on the GPU would move them by far more."""
    on_cpu, cpu_result = Trainer(run_config(model), progress=False, validate=False).fit(data)
    on_gpu, gpu_result = Trainer(run_config(model, device="cuda"), progress=False, validate=False).fit(data)
    for name, weights in on_cpu.state_dict().items():
        assert on_gpu.state_dict()[name].device.type == "cpu"
        torch.testing.assert_close(on_gpu.state_dict()[name], weights, rtol=1e-3, atol=1e-4)
    assert [r["loss"] for r in gpu_result.history] == pytest.approx([r["loss"] for r in cpu_result.history], rel=1e-4)
    assert on_gpu.graph.adj.device.type == "cpu"
    users = torch.arange(data.n_users)
    torch.testing.assert_close(on_gpu.score(users), on_cpu.score(users), rtol=1e-3, atol=1e-3)


@requires_cuda
def test_simgcl_trains_on_cuda_and_comes_back_to_the_cpu(data):
    """SimGCL's noise is drawn by the GPU's generator, so its steps are not the CPU's: finite and learning."""
    model, result = Trainer(run_config("simgcl", device="cuda", epochs=6), progress=False, validate=False).fit(data)
    losses = [r["loss"] for r in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert model.embedding.weight.device.type == "cpu" and model.graph.adj.device.type == "cpu"


@requires_cuda
def test_validation_on_cuda_and_a_checkpoint_that_loads_without_a_gpu(data, tmp_path):
    folder = tmp_path / "ckpt"
    model, result = Trainer(run_config(device="cuda", epochs=8), progress=False, checkpoint_dir=folder).fit(data)
    cpu_model, cpu_result = Trainer(run_config(epochs=8), progress=False).fit(data)
    assert result.best_metric == pytest.approx(cpu_result.best_metric, abs=0.02)
    saved = torch.load(folder / "weights.pt", weights_only=True)   # no map_location: plain CPU tensors
    assert all(tensor.device.type == "cpu" for tensor in saved.values())
    loaded, run, _, _ = load_checkpoint(folder, dataset=data)     # generated data: no name to load it by
    assert run.train.device == "cuda"
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)


@requires_cuda
def test_an_nccl_rank_takes_the_plain_gpu_steps(data, tmp_path):
    """A world of one NCCL rank runs the data-parallel step (slice, all_reduce of the header and gradients on the
    GPU) and trains what the plain loop trains on the GPU."""
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"file://{tmp_path}/rendezvous", rank=0, world_size=1)
    try:
        assert dist.get_backend() == "nccl"
        ranked, ranked_result = Trainer(run_config(device="cuda"), progress=False, validate=False,
                                        ranks=Ranks.current()).fit(data)
    finally:
        dist.destroy_process_group()
    plain, plain_result = Trainer(run_config(device="cuda"), progress=False, validate=False).fit(data)
    for name, weights in plain.state_dict().items():
        torch.testing.assert_close(ranked.state_dict()[name], weights, rtol=1e-4, atol=1e-5)
    assert [r["loss"] for r in ranked_result.history] == pytest.approx([r["loss"] for r in plain_result.history],
                                                                       rel=1e-5)


@requires_cuda
def test_the_launcher_gives_cuda_ranks_nccl_and_one_gpu_each():
    assert run_on_ranks(backend_and_device, 1, device="cuda") == ("nccl", 0)
