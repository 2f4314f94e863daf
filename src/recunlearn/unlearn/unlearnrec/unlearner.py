"""UnlearnRec (Chen, Xia, Huang; SIGIR 2025) on the Unlearner contract: `prepare` pre-trains the influence
encoder once per trained model; each request is then one encoder forward (zero-shot), optionally followed by
a short fine-tuning of a per-request copy of E₀ and the MLP."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ...data.graph import build_graph
from ...data.interactions import Dataset, Interactions
from ...models.base import Recommender
from ..base import UnlearnResult, Unlearner
from . import io
from .encoder import REQUEST_TIME_FIELDS, IEConfig, InfluenceEncoder
from .selection import CALIBRATION_STREAM, ERASED_USERS_STREAM, SCALING_STREAM, SELECTION_STREAM, \
    CheckpointKeeper, ErasedUsersProbe, Probe, calibrate, scale_gap, withdraw_gap
from .training import EncoderInputs, Episode, finetune, pretrain_epoch, simulated_request

PRETRAINING_STREAM, FINETUNING_STREAM, RESET_STREAM = 0, 3, 5
MIN_SCALE = 1e-3   # a factor found at 0 (no withdraw at all) enters the log-log interpolation as this


class UnlearnRec(Unlearner):
    """Pre-trained influence encoder: zero-shot unlearning by one forward pass (+ optional fine-tuning)."""

    name = "unlearnrec"
    kind = "approximate"
    config_class = IEConfig
    request_time_fields = REQUEST_TIME_FIELDS

    encoder: InfluenceEncoder      # shared by every request, never changed after `prepare`
    inputs: EncoderInputs          # what the next request's encoder pass starts from
    backbone: Recommender          # a frozen copy of the original, attached to whichever graph a loop needs
    scaling: dict | None = None    # the factors on W_η that `withdraw_scaling: request` found in preparation

    # --- preparation -------------------------------------------------------------------------------
    def _prepare(self, model: Recommender, dataset: Dataset) -> None:
        _attach_full_graph(model, dataset)
        self._setup(model, dataset)
        self.inputs = EncoderInputs(model.embedding.weight.detach().clone(),
                                    torch.cat(model.final_embeddings()).detach().clone(),
                                    Interactions.empty(dataset.n_users, dataset.n_items))
        with torch.random.fork_rng(devices=[]):   # reproducible, and the caller's global stream is left alone
            torch.manual_seed(self.config.seed)
            self.calibration = self._calibrate(dataset)
            self.pretraining = self._pretrain(dataset)
            self.scaling = self._calibrate_scaling(dataset) if self.config.withdraw_scaling == "request" else None
        self.encoder.requires_grad_(False)
        self.backbone.attach(model.graph)

    def _setup(self, model: Recommender, dataset: Dataset) -> None:
        self.backbone = model.clone().requires_grad_(False)
        layers = self.config.layers or getattr(model.config, "layers", 3)
        self.encoder = InfluenceEncoder(dataset.n_users + dataset.n_items, model.config.dim, layers, self.config)

    def _pretrain(self, dataset: Dataset) -> dict:
        """Train H⁰ and W_η (MLP frozen) on a fresh simulated request every `sim_every` epochs; keep the epoch
        chosen on a held-out simulated request (`selection.select_check`)."""
        cfg, encoder, backbone = self.config, self.encoder, self.backbone
        rng = np.random.default_rng([cfg.seed, PRETRAINING_STREAM])
        views = torch.Generator().manual_seed(cfg.seed)
        probe = Probe.draw(dataset, cfg.probe_rho, cfg.seed, SELECTION_STREAM, cfg.idm_norm)
        encoder.mlp.requires_grad_(False)
        optimizer = torch.optim.Adam([encoder.h0, encoder.withdraw], lr=cfg.lr)
        keeper = CheckpointKeeper(cfg.select_recall_tolerance)
        keeper.offer({"epoch": 0, **probe.check(encoder, backbone, self.inputs)}, encoder)
        bar = tqdm(range(cfg.epochs), desc="UnlearnRec pre-training", disable=not self.progress)
        for epoch in bar:
            if epoch % cfg.sim_every == 0:
                edges = simulated_request(dataset.train, cfg.sim_rho, rng)
                episode = Episode.of(edges, dataset.train.subtract(edges), cfg.idm_norm)
                backbone.attach(episode.graph)
            loss = pretrain_epoch(encoder, backbone, self.inputs, episode, optimizer, cfg, rng, views)
            if (epoch + 1) % cfg.select_every == 0 or epoch + 1 == cfg.epochs:
                check = {"epoch": epoch + 1, "loss": loss, **probe.check(encoder, backbone, self.inputs)}
                keeper.offer(check, encoder)
                bar.set_postfix(loss=f"{loss:.4f}", recall=f"{check['valid_recall']:.4f}",
                                auc=f"{check['request_auc']:.3f}")
        selected = keeper.restore_selected(encoder)
        return {"history": keeper.checks, "selected": selected}

    def _calibrate(self, dataset: Dataset) -> dict:
        """The initial W_η (one value for all nodes) with which the zero-shot model, before any pre-training,
        ranks a held-out simulated request's edges against validation edges at chance (`selection.calibrate`)."""
        if self.config.withdraw_calibration == "none":
            return {"withdraw_init": self.config.withdraw_init, "reached": None}
        probe = Probe.draw(dataset, self.config.probe_rho, self.config.seed, CALIBRATION_STREAM,
                           self.config.idm_norm)
        result = calibrate(withdraw_gap(probe, self.encoder, self.backbone, self.inputs), self.config.withdraw_init)
        with torch.no_grad():
            self.encoder.withdraw.fill_(result["withdraw_init"])
        return result

    def _calibrate_scaling(self, dataset: Dataset) -> dict:
        """Factors on the pre-trained W_η, each found on a held-out probe as the calibration finds W_η's start:
        random probes of several sizes (request edges against validation edges at chance) and a probe of whole
        users' histories (those users' validation items at chance against items they never touched). A factor
        that costs more than `select_recall_tolerance` of the probe's validation Recall@20 against factor 1 is
        not taken (1 is kept): a withdraw that strong damages what the model should keep."""
        cfg = self.config
        doublings = int(np.floor(np.log2(cfg.scaling_max))) + 1   # tries 1, 2, 4, ... up to scaling_max

        def search(probe: Probe) -> dict:
            found = calibrate(scale_gap(probe, self.encoder, self.backbone, self.inputs), 1.0,
                              max_doublings=doublings, rel_tol=1e-2)
            scale = min(found["withdraw_init"], cfg.scaling_max)
            if not found["reached"]:   # no factor reaches chance: no evidence for another factor than 1
                return {"scale": 1.0, "found": scale, "reached": False, "gap": found["gap"], "recall_kept": None,
                        "edges": len(probe.episode.edges)}
            recall = {s: probe.valid_recall(probe.scorer(self.encoder, self.backbone, self.inputs, s))
                      for s in (1.0, scale)}
            kept = recall[scale] >= (1 - cfg.select_recall_tolerance) * recall[1.0]
            return {"scale": scale if kept else 1.0, "found": scale, "reached": True, "gap": found["gap"],
                    "recall_kept": kept, "edges": len(probe.episode.edges)}

        random = [{"rho": cfg.probe_rho * multiple, **search(Probe.draw(dataset, cfg.probe_rho * multiple, cfg.seed,
                                                                         SCALING_STREAM + k, cfg.idm_norm))}
                  for k, multiple in enumerate(sorted(cfg.scaling_probe_sizes))]
        erased = search(ErasedUsersProbe.draw(dataset, cfg.probe_rho, cfg.seed, ERASED_USERS_STREAM, cfg.idm_norm))
        return {"random": random, "erased_users": erased, "train_edges": len(dataset.train)}

    def withdraw_scale(self, edges: Interactions, residual: Interactions) -> float:
        """The factor on W_η for a request of `edges` that leaves `residual` (1 without `withdraw_scaling`):
        the random probes' factor interpolated at the request's size (log-log, held at the ends), and the erased
        users' factor, mixed by the share of the request's edges whose user keeps no training edge. With
        `reset_erased_users` those users' own rows are drawn afresh anyway, so their edges take factor 1."""
        if self.scaling is None or len(edges) == 0:
            return 1.0
        sizes = self.scaling["random"]
        log_rho = np.log([s["rho"] for s in sizes])
        log_scale = np.log([max(s["scale"], MIN_SCALE) for s in sizes])
        random = np.interp(np.log(len(edges) / self.scaling["train_edges"]), log_rho, log_scale)
        erased = np.bincount(residual.users, minlength=residual.n_users)[edges.users] == 0
        share = erased.mean()
        erased_scale = 1.0 if self.config.reset_erased_users else self.scaling["erased_users"]["scale"]
        return float(np.exp((1 - share) * random + share * np.log(max(erased_scale, MIN_SCALE))))

    # --- requests ----------------------------------------------------------------------------------
    def _unlearn(self, edges: Interactions, residual: Dataset) -> UnlearnResult:
        """Zero-shot: one encoder pass over the request's IDM, read out over the residual graph; then the
        optional fine-tuning. With `sequential="cumulative"` the IDM holds every request since the encoder's
        input state was last reset (by `prepare` or a fine-tuning): a stream of zero-shot requests gives the
        zero-shot model of their union instead of stacking one shift per request."""
        cfg = self.config
        start = time.perf_counter()
        encoded = self.inputs.pending.union(edges) if cfg.sequential == "cumulative" else edges
        episode = Episode.of(encoded, residual.train, cfg.idm_norm)
        scale = self.withdraw_scale(encoded, residual.train)
        with torch.no_grad():
            e0 = self.encoder(self.inputs.e0, self.inputs.final, episode.idm, scale=scale)
        seconds = {"zero_shot": time.perf_counter() - start}
        if cfg.finetune_epochs > 0:
            start = time.perf_counter()
            seed = [cfg.seed, FINETUNING_STREAM, int(encoded.hash, 16)]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
                e0 = finetune(self.encoder, self.backbone, self.inputs, episode, cfg, seed, scale)
            seconds["finetune"] = time.perf_counter() - start
        model = self._model_with(e0, episode)
        reset = self._reset_erased_users(model, encoded, residual.train) if cfg.reset_erased_users else 0
        if reset:
            e0 = model.embedding.weight.detach().clone()
        if cfg.sequential == "cumulative" and cfg.finetune_epochs == 0:
            self.inputs = EncoderInputs(self.inputs.e0, self.inputs.final, encoded)
        else:   # the next request is encoded alone, from this model
            self.inputs = EncoderInputs(e0, torch.cat(model.final_embeddings()),
                                        Interactions.empty(residual.n_users, residual.n_items))
        result = self._result(model, residual, edges, model, request_edges=len(edges), encoded_edges=len(encoded),
                              residual_edges=len(residual.train), withdraw_scale=scale, reset_users=reset)
        result.seconds.update(seconds)
        return result

    def _reset_erased_users(self, model: Recommender, encoded: Interactions, residual: Interactions) -> int:
        """Fresh 0-layer rows for the encoded request's users that keep no training edge. A retrained model never
        trains such a user's row (no positive puts it in a batch), so it holds a draw from the initial
        distribution; the encoder's shift of the original row would keep what the user's data taught it."""
        users = np.unique(encoded.users)
        users = users[np.bincount(residual.users, minlength=residual.n_users)[users] == 0]
        if len(users):
            seed = np.random.SeedSequence([self.config.seed, RESET_STREAM, int(encoded.hash, 16)])
            model.reinitialise(torch.from_numpy(users), torch.Generator().manual_seed(int(seed.generate_state(1)[0])))
        return int(len(users))

    def _model_with(self, e0: torch.Tensor, episode: Episode) -> Recommender:
        """The original backbone with 0-layer embeddings `e0`, attached to the residual graph."""
        model = self.original.clone()
        with torch.no_grad():
            model.embedding.weight.copy_(e0)
        return model.attach(episode.graph).eval()

    def preparation_report(self) -> dict:
        """The pre-training epochs run and the one selection kept, and the calibrated withdraw strength."""
        checks = self.pretraining["history"]
        return {"pretrain_epochs_run": checks[-1]["epoch"], "selected_epoch": self.pretraining["selected"]["epoch"],
                "withdraw": self.calibration["withdraw_init"], "withdraw_calibrated": self.calibration["reached"]}

    # --- persistence -------------------------------------------------------------------------------
    def _save_extra(self, path: Path) -> None:
        meta = {"layers": self.encoder.layers, "model_fingerprint": io.fingerprint(self.original.embedding.weight),
                "pretraining": self.pretraining, "calibration": self.calibration, "scaling": self.scaling}
        io.save_encoder(path, self.encoder, self.inputs, meta)

    def _load_extra(self, path: Path, model: Recommender, dataset: Dataset) -> None:
        meta = io.read_meta(path)
        if meta["model_fingerprint"] != io.fingerprint(model.embedding.weight):
            raise ValueError(f"the encoder in {path} belongs to different model weights: prepare a new one")
        _attach_full_graph(model, dataset)
        self._setup(model, dataset)
        self.encoder.load_state_dict(io.load_encoder_state(path))
        self.encoder.requires_grad_(False)
        self.inputs = io.load_inputs(path, dataset.n_users, dataset.n_items)
        self.pretraining, self.calibration = meta["pretraining"], meta["calibration"]
        self.scaling = meta.get("scaling")


def _attach_full_graph(model: Recommender, dataset: Dataset) -> None:
    """The original model serves the full training graph (it may come unattached, e.g. freshly loaded)."""
    if model.graph is None or model.graph.source_hash != dataset.train.hash:
        model.attach(build_graph(dataset.train))
