"""UnlearnRec's Influence Encoder (Chen, Xia, Huang; SIGIR 2025), as stated in docs/spec unlearnrec.md.

A request E_Δ becomes a sparse influence dependency matrix Â_Δ (the normalised adjacency of the request
edges alone). The encoder propagates learnable per-node vectors H⁰ and a withdraw term through Â_Δ,
maps the shift through an identity-initialised MLP and adds it to the backbone's 0-layer embeddings;
the backbone then reads out over the residual graph Â_r. One forward pass is the zero-shot unlearning.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from tqdm.auto import tqdm

from ..config import StrictConfig
from ..data.graph import Graph, bipartite_csr, build_graph, edge_norm, normalized_adjacency, spmm
from ..data.interactions import Dataset, Interactions
from ..data import sampling
from ..eval.ranking import evaluate
from ..eval.scorer import EmbeddingScorer
from ..models.base import Recommender
from .base import UnlearnResult, Unlearner


class IEConfig(StrictConfig):
    """Defaults are the authors' settings (unlearnrec.md); every choice the paper leaves open is a field."""

    layers: int | None = Field(None, ge=1, description="IE propagation layers (default: the backbone's L)")
    mlp_layers: int = Field(2, ge=1)
    leaky_slope: float = 0.99
    withdraw_init: float = 0.002
    gamma: float = 0.1
    h0_scope: Literal["all", "request"] = Field(
        "all", description="nodes whose H⁰ enters H̄: all (the paper's Σ_{l=0..L} H^l) or only the request's")
    sequential: Literal["compose", "cumulative"] = Field(
        "cumulative", description="a later request: compose (encode it alone from the current state, as the paper "
                               "states) or cumulative (encode all requests since the last fine-tuning together, "
                               "from the state the encoder last started from: shifts never stack)")
    # pre-training
    epochs: int = Field(20, ge=1)
    sim_every: int = Field(5, ge=1, description="epochs between fresh simulated requests")
    sim_rho: float = Field(0.1, gt=0, lt=1, description="fraction of training edges per simulated request")
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(8192, ge=1)
    lambda_u: float = 0.5
    lambda_p: float = 0.02
    lambda_c: float = 1e-3
    tau_p: float = 1.0
    preserve_group: int = Field(1024, ge=2, description="pairs per in-batch softmax of the preserving loss")
    tau_c: float = 1.0
    contrast_drop: float = Field(0.05, ge=0, lt=1)
    select_every: int = Field(1, ge=1, description="epochs between held-out selection checks")
    seed: int = 0
    # fine-tuning
    finetune_epochs: float = Field(0.0, ge=0)
    finetune_lr: float = Field(1e-3, gt=0)
    finetune_lambda_u: float = 0.2
    finetune_lambda_p: float = 0.01
    finetune_tau_p: float = 10.0

    def pretraining_fields(self) -> dict:
        """The fields that pre-training reads: two configs equal here give the same pre-trained encoder."""
        return self.model_dump(exclude=REQUEST_TIME_FIELDS)


REQUEST_TIME_FIELDS = {"sequential", "finetune_epochs", "finetune_lr", "finetune_lambda_u", "finetune_lambda_p",
                       "finetune_tau_p"}


def influence_matrix(edges: Interactions) -> torch.Tensor:
    """Â_Δ: the normalised bipartite adjacency of the request edges alone (2|E_Δ| non-zeros)."""
    return normalized_adjacency(edges.users, edges.items, edges.n_users, edges.n_items)


def dropped_influence_matrix(edges: Interactions, drop: float, rng: np.random.Generator) -> torch.Tensor:
    """Â'_Δ: each IDM edge dropped with probability `drop`, kept values rescaled by 1/(1-drop)."""
    values = edge_norm(edges.users, edges.items, edges.n_users, edges.n_items)
    keep = rng.random(len(edges)) >= drop
    return bipartite_csr(edges.users[keep], edges.items[keep], values[keep] / (1.0 - drop),
                         edges.n_users, edges.n_items)


class InfluenceEncoder(nn.Module):
    """H⁰ [N, d] (init 0), withdraw rates W_η [N, 1], and an identity-initialised K-layer MLP."""

    def __init__(self, n_nodes: int, dim: int, layers: int, cfg: IEConfig):
        super().__init__()
        self.layers, self.gamma, self.h0_scope = layers, cfg.gamma, cfg.h0_scope
        self.h0 = nn.Parameter(torch.zeros(n_nodes, dim))
        self.withdraw = nn.Parameter(torch.full((n_nodes, 1), cfg.withdraw_init))
        self.mlp = nn.ModuleList(nn.Linear(dim, dim) for _ in range(cfg.mlp_layers))
        for layer in self.mlp:
            nn.init.eye_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.act = nn.LeakyReLU(cfg.leaky_slope)

    def propagate(self, idm: torch.Tensor) -> list[torch.Tensor]:
        """H^0..H^L with H^l = Â_Δ H^{l-1}."""
        hs = [self.h0]
        for _ in range(self.layers):
            hs.append(spmm(idm, hs[-1]))
        return hs

    def shift(self, idm: torch.Tensor, final_emb: torch.Tensor, hs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """ΔE = Σ_l H^l − γ E_w^L, with E_w^0 = Ē ⊙ W_η propagated L times over Â_Δ."""
        hs = hs if hs is not None else self.propagate(idm)
        ew = final_emb * self.withdraw
        for _ in range(self.layers):
            ew = spmm(idm, ew)
        h0 = hs[0]
        if self.h0_scope == "request":   # untouched nodes keep their embedding: shifts cannot compound
            h0 = h0 * (idm.crow_indices().diff() > 0).unsqueeze(1)
        return h0 + torch.stack(hs[1:]).sum(0) - self.gamma * ew

    def mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.mlp:
            x = self.act(layer(x))
        return x

    def forward(self, e0: torch.Tensor, final_emb: torch.Tensor, idm: torch.Tensor,
                hs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Ẽ₀ = E₀ + MLP(ΔE)."""
        return e0 + self.mlp_forward(self.shift(idm, final_emb, hs))


# --- losses -------------------------------------------------------------------------------------------

def unlearning_loss(user_emb, item_emb, edges: Interactions) -> torch.Tensor:
    """L_u = −mean log σ(−ŷ_ui) over all request edges."""
    u = torch.from_numpy(edges.users)
    i = torch.from_numpy(edges.items)
    return F.softplus((user_emb[u] * item_emb[i]).sum(-1)).mean()


def in_batch_log_softmax(user_emb, item_emb, users, pos, tau: float) -> torch.Tensor:
    logits = user_emb[users] @ item_emb[pos].T / tau
    return torch.diagonal(F.log_softmax(logits, dim=1))


def preserving_loss(user_emb, item_emb, orig_user, orig_item, users, pos, tau: float,
                    group: int) -> torch.Tensor:
    """L_p = Σ_b (ℓ_b^new − ℓ_b^orig)²: keep the in-batch residual score distribution of the original.

    The softmax runs within consecutive groups of `group` pairs of the (shuffled) batch: the same formula
    with B = group, at O(B·group) instead of O(B²) cost for large CPU batches.
    """
    total = user_emb.new_zeros(())
    for start in range(0, users.numel(), group):
        u, p = users[start:start + group], pos[start:start + group]
        new = in_batch_log_softmax(user_emb, item_emb, u, p, tau)
        with torch.no_grad():
            old = in_batch_log_softmax(orig_user, orig_item, u, p, tau)
        total = total + (new - old).pow(2).sum()
    return total


def contrastive_loss(view: torch.Tensor, hs: list[torch.Tensor], nodes_u: torch.Tensor,
                     nodes_i: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE per IE layer between H^l (stop-gradient) and a view H'^l = Â'_Δ H^{l-1} with dropped edges."""
    total = hs[0].new_zeros(())
    for layer in range(1, len(hs)):
        anchor = hs[layer].detach()
        other = spmm(view, hs[layer - 1])
        for nodes in (nodes_u, nodes_i):
            a, b = F.normalize(anchor[nodes], dim=-1), F.normalize(other[nodes], dim=-1)
            total = total + F.cross_entropy(a @ b.T / tau, torch.arange(nodes.numel()))
    return total


# --- the unlearner ------------------------------------------------------------------------------------

class UnlearnRec(Unlearner):
    """Pre-train the IE once per trained model; then each request is one IE forward (+ optional fine-tuning)."""

    name = "unlearnrec"
    kind = "approximate"

    def __init__(self, config: IEConfig | None = None, progress: bool = True):
        super().__init__()
        self.cfg = config or IEConfig()
        self.progress = progress
        self.encoder: InfluenceEncoder | None = None
        self.history: list[dict] = []

    # set-up --------------------------------------------------------------------------------------
    def _bind(self, model: Recommender, dataset: Dataset) -> None:
        self.model = model
        self.dataset = dataset
        layers = self.cfg.layers or getattr(model.config, "layers", 3)
        model.attach(build_graph(dataset.train))
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            u, i = model.embed()
        # The encoder's input state: E₀ and Ē it shifts, and the requests it encodes from them (`pending`).
        self.e0 = model.embedding.weight.detach().clone()
        self.final = torch.cat([u, i]).detach()
        self.pending = Interactions.empty(dataset.n_users, dataset.n_items)
        # Its own stream for the backbone's self-supervised views, so BPR sampling does not depend on them.
        self.view_generator = torch.Generator().manual_seed(self.cfg.seed)
        if self.encoder is None:
            self.encoder = InfluenceEncoder(dataset.n_users + dataset.n_items, self.e0.shape[1], layers, self.cfg)
        self.state = UnlearnResult(model, dataset, Interactions.empty(dataset.n_users, dataset.n_items),
                                   {}, self.kind)

    def prepare(self, model: Recommender, dataset: Dataset) -> "UnlearnRec":
        """Pre-train H⁰ and W_η on simulated requests (MLP frozen); keep the epoch that does best on a
        held-out simulated request and the validation set."""
        start = time.perf_counter()
        self._bind(model, dataset)
        cfg, enc = self.cfg, self.encoder
        rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        for p in enc.mlp.parameters():
            p.requires_grad_(False)
        opt = torch.optim.Adam([enc.h0, enc.withdraw], lr=cfg.lr)
        selection_check = self._heldout_check(self._simulate(rng))
        best, best_state = None, copy.deepcopy(enc.state_dict())
        epochs = tqdm(range(cfg.epochs), desc="IE pre-training", disable=not self.progress)
        for epoch in epochs:
            if epoch % cfg.sim_every == 0:
                request = self._simulate(rng)
                residual = dataset.train.subtract(request)
                graph, idm = build_graph(residual), influence_matrix(request)
            loss = self._epoch(opt, request, residual, graph, idm, rng,
                               lambda_u=cfg.lambda_u, lambda_p=cfg.lambda_p, tau_p=cfg.tau_p,
                               lambda_c=cfg.lambda_c, fraction=1.0, trainable_e0=None)
            if (epoch + 1) % cfg.select_every == 0 or epoch + 1 == cfg.epochs:
                check = selection_check()
                check.update(epoch=epoch + 1, loss=loss)
                self.history.append(check)
                if best is None or _better(check, best):
                    best, best_state = check, copy.deepcopy(enc.state_dict())
                epochs.set_postfix(loss=f"{loss:.4f}", valid=f"{check['valid_recall']:.4f}",
                                   forget=f"{check['forget_score']:.2f}/{check['nonedge_score']:.2f}")
        enc.load_state_dict(best_state)
        self.selected = best
        self.prepare_seconds = time.perf_counter() - start
        return self

    def _simulate(self, rng: np.random.Generator) -> Interactions:
        train = self.dataset.train
        take = rng.random(len(train)) < self.cfg.sim_rho
        return train.select(take)

    def _heldout_check(self, heldout: Interactions):
        """The selection check for a held-out simulated request; its graph, IDM and random pairs (almost
        all non-edges) are built once and reused at every epoch."""
        residual = self.dataset.train.subtract(heldout)
        graph, idm = build_graph(residual), influence_matrix(heldout)
        forget_pairs = (torch.from_numpy(heldout.users), torch.from_numpy(heldout.items))
        rng = np.random.default_rng(0)
        random_pairs = (torch.from_numpy(rng.integers(0, residual.n_users, 20000)),
                        torch.from_numpy(rng.integers(0, residual.n_items, 20000)))

        def check() -> dict:
            """Zero-shot on the held-out request: validation Recall@20 and request-edge vs random scores."""
            with torch.no_grad():
                scorer = EmbeddingScorer(*self.model.embed(graph, self.encoder(self.e0, self.final, idm)))
            return {"valid_recall": evaluate(scorer, self.dataset.valid, residual, ks=[20])["Recall@20"],
                    "forget_score": scorer.score_pairs(*forget_pairs).mean().item(),
                    "nonedge_score": scorer.score_pairs(*random_pairs).mean().item()}
        return check

    def _epoch(self, opt, request: Interactions, residual: Interactions, graph: Graph, idm: torch.Tensor,
               rng, *, lambda_u, lambda_p, tau_p, lambda_c, fraction: float,
               trainable_e0: torch.Tensor | None) -> float:
        """One pass (or `fraction` of one) over residual positives; positives never come from the request."""
        model, enc, cfg = self.model, self.encoder, self.cfg
        n_users = model.n_users
        orig_u, orig_i = self.final[:n_users], self.final[n_users:]
        base_e0 = self.e0 if trainable_e0 is None else trainable_e0
        n_batches = max(1, int(np.ceil(fraction * len(residual) / cfg.batch_size)))
        # L_M is the backbone's own loss on the residual graph, self-supervised views included (SGL).
        model.attach(graph)
        model.start_epoch(self.view_generator)
        total = 0.0
        batches = sampling.bpr_epoch(residual, rng, cfg.batch_size)
        for step in range(n_batches):
            users, pos, neg = (torch.from_numpy(a) for a in next(batches))
            hs = enc.propagate(idm)
            e0 = enc(base_e0, self.final, idm, hs)
            u_emb, i_emb = model.embed(graph, e0)
            loss_m, _ = model.loss_terms((users, pos, neg), u_emb, i_emb, e0, graph)
            loss = loss_m + lambda_u * unlearning_loss(u_emb, i_emb, request)
            loss = loss + lambda_p * preserving_loss(u_emb, i_emb, orig_u, orig_i, users, pos, tau_p,
                                                   cfg.preserve_group)
            if lambda_c > 0:
                nodes_u, nodes_i = torch.unique(users), torch.unique(pos) + n_users
                view = dropped_influence_matrix(request, cfg.contrast_drop, rng)
                loss = loss + lambda_c * contrastive_loss(view, hs, nodes_u, nodes_i, cfg.tau_c)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        return total / n_batches

    # requests ------------------------------------------------------------------------------------
    def unlearn(self, edges: Interactions, finetune_epochs: float | None = None) -> UnlearnResult:
        """Zero-shot: one IE forward over the request's IDM and a readout over the residual graph; then
        optional fine-tuning of a copy of Ẽ₀ and the MLP on the residual data with the real request.

        With `sequential="cumulative"`, the IDM holds every request since the encoder's input state was last
        reset (by `prepare` or a fine-tuning), so a stream of zero-shot requests equals one zero-shot request
        of their union instead of stacking one shift per request."""
        cfg = self.cfg
        finetune_epochs = cfg.finetune_epochs if finetune_epochs is None else finetune_epochs
        seconds = {}
        start = time.perf_counter()
        residual_data = self._residual(edges)
        residual = residual_data.train
        graph = build_graph(residual)
        encoded = self.pending.union(edges) if cfg.sequential == "cumulative" else edges
        idm = influence_matrix(encoded)
        with torch.no_grad():
            new_e0 = self.encoder(self.e0, self.final, idm)
        seconds["zero_shot"] = time.perf_counter() - start
        if finetune_epochs > 0:
            start = time.perf_counter()
            new_e0 = self._finetune(encoded, residual, graph, idm, finetune_epochs)
            seconds["finetune"] = time.perf_counter() - start
        seconds["total"] = sum(seconds.values())
        keep_input = cfg.sequential == "cumulative" and finetune_epochs == 0
        return self._advance(new_e0, edges, residual_data, graph, seconds, encoded if keep_input else None)

    def _finetune(self, edges, residual, graph, idm, epochs: float) -> torch.Tensor:
        """Fine-tune the zero-shot model Ẽ₀ = E₀' + MLP(ΔE): E₀' is a trainable copy of the encoder's input
        E₀ and the MLP is unfrozen, while H⁰ and W_η stay frozen; `edges` are the requests the IDM encodes."""
        cfg, enc = self.cfg, self.encoder
        e0_param = nn.Parameter(self.e0.clone())
        enc.h0.requires_grad_(False)
        enc.withdraw.requires_grad_(False)
        for p in enc.mlp.parameters():
            p.requires_grad_(True)
        opt = torch.optim.Adam([e0_param, *enc.mlp.parameters()], lr=cfg.finetune_lr)
        rng = np.random.default_rng(cfg.seed + 1)
        full, rest = int(epochs), epochs - int(epochs)
        for fraction in [1.0] * full + ([rest] if rest > 0 else []):
            self._epoch(opt, edges, residual, graph, idm, rng, lambda_u=cfg.finetune_lambda_u,
                        lambda_p=cfg.finetune_lambda_p, tau_p=cfg.finetune_tau_p, lambda_c=0.0,
                        fraction=fraction, trainable_e0=e0_param)
        for p in enc.mlp.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            return enc(e0_param, self.final, idm)

    def _advance(self, new_e0, edges, residual: Dataset, graph, seconds,
                 pending: Interactions | None) -> UnlearnResult:
        """Make the unlearned state current. The next request composes on it, unless `pending` (the requests
        encoded so far) is given: then the encoder's input state stays and `pending` grows."""
        model = copy.deepcopy(self.model)
        with torch.no_grad():
            model.embedding.weight.copy_(new_e0)
        model.attach(graph)
        model.eval()
        self.model = model
        if pending is None:
            with torch.no_grad():
                u, i = model.embed()
            self.e0, self.final = new_e0.detach(), torch.cat([u, i]).detach()
            self.pending = Interactions.empty(residual.n_users, residual.n_items)
        else:
            self.pending = pending
        forgotten = self.state.forgotten.union(edges)
        self.state = UnlearnResult(model, residual, forgotten, seconds, self.kind,
                                   report={"request_edges": len(edges), "residual_edges": len(residual.train)})
        return self.state

    def fork(self) -> "UnlearnRec":
        """An independent copy in the current state (same pre-trained encoder), to branch experiments:
        e.g. zero-shot and fine-tuned unlearning of the same request from the same starting point."""
        other = UnlearnRec(self.cfg, self.progress)
        other.encoder = copy.deepcopy(self.encoder)
        other.model, other.dataset = self.model.clone(), self.dataset
        other.e0, other.final, other.pending = self.e0.clone(), self.final.clone(), self.pending
        other.state = UnlearnResult(other.model, self.state.dataset, self.state.forgotten, {}, self.kind)
        other.prepare_seconds, other.history = self.prepare_seconds, list(self.history)
        other.view_generator = torch.Generator()
        other.view_generator.set_state(self.view_generator.get_state())
        return other

    # persistence ---------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Save the pre-trained encoder, bound to the model weights and data it now serves. Between cumulative
        requests, the encoder's input state (E₀, Ē and the requests encoded since) is saved with it."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        _save_atomic(self.encoder.state_dict(), path / "encoder.pt")
        if len(self.pending):
            _save_atomic({"e0": self.e0, "final": self.final, "pending_users": torch.from_numpy(self.pending.users),
                          "pending_items": torch.from_numpy(self.pending.items)}, path / INPUT_STATE)
        else:
            (path / INPUT_STATE).unlink(missing_ok=True)
        meta = {"config": self.cfg.model_dump(), "model_fingerprint": fingerprint(self.model.embedding.weight),
                "train_hash": self.state.dataset.train.hash, "layers": self.encoder.layers,
                "prepare_seconds": self.prepare_seconds, "history": self.history}
        (path / "encoder.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: str | Path, model: Recommender, dataset: Dataset, progress: bool = True) -> "UnlearnRec":
        path = Path(path)
        if not (path / "encoder.pt").is_file():
            raise FileNotFoundError(f"no pre-trained influence encoder in {path}: run "
                                    "`recunlearn prepare --method unlearnrec --checkpoint DIR` first")
        meta = json.loads((path / "encoder.json").read_text())
        self = cls(IEConfig.model_validate(meta["config"]), progress=progress)
        if meta["train_hash"] != dataset.train.hash:
            raise ValueError(f"the encoder in {path} was pre-trained on training data {meta['train_hash']}, "
                             f"not on this model's {dataset.train.hash}: pre-train a new one")
        if meta["model_fingerprint"] != fingerprint(model.embedding.weight):
            raise ValueError(f"the encoder in {path} belongs to different model weights: pre-train a new one")
        self._bind(model, dataset)
        self.encoder.load_state_dict(torch.load(path / "encoder.pt", weights_only=True))
        if (path / INPUT_STATE).is_file():
            state = torch.load(path / INPUT_STATE, weights_only=True)
            self.e0, self.final = state["e0"], state["final"]
            self.pending = Interactions.from_arrays(state["pending_users"].numpy(), state["pending_items"].numpy(),
                                                    dataset.n_users, dataset.n_items)
        self.prepare_seconds = meta["prepare_seconds"]
        self.history = meta["history"]
        return self


INPUT_STATE = "input_state.pt"


def _save_atomic(obj, target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(target)


def fingerprint(weights: torch.Tensor) -> str:
    return hashlib.sha256(weights.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def _better(check: dict, best: dict) -> bool:
    """Among checks whose held-out request edges score no higher than random non-edges (forgotten),
    prefer higher validation recall; a forgetting check always beats a non-forgetting one."""
    forgets = check["forget_score"] <= check["nonedge_score"]
    best_forgets = best["forget_score"] <= best["nonedge_score"]
    if forgets != best_forgets:
        return forgets
    if forgets:
        return check["valid_recall"] > best["valid_recall"]
    return check["forget_score"] - check["nonedge_score"] < best["forget_score"] - best["nonedge_score"]
