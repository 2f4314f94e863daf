"""Files of a saved UnlearnRec state, next to the base's: the pre-trained encoder (γ included), the encoder's
input state, and what pre-training chose. Tensors only: every file loads with `torch.load(weights_only=True)`."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ...data.interactions import Interactions
from .training import EncoderInputs

ENCODER_FILE, INPUT_STATE_FILE, ENCODER_META = "encoder.pt", "input_state.pt", "encoder.json"


def fingerprint(weights: torch.Tensor) -> str:
    """A short hash of a weight tensor: the saved encoder belongs to exactly these backbone weights."""
    return hashlib.sha256(weights.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def save_encoder(path: Path, encoder: torch.nn.Module, inputs: EncoderInputs, meta: dict) -> None:
    _save_atomic(encoder.state_dict(), path / ENCODER_FILE)
    pending = inputs.pending
    _save_atomic({"e0": inputs.e0, "final": inputs.final, "pending_users": torch.from_numpy(pending.users),
                  "pending_items": torch.from_numpy(pending.items)}, path / INPUT_STATE_FILE)
    (path / ENCODER_META).write_text(json.dumps(meta, indent=2))


def read_meta(path: Path) -> dict:
    if not (path / ENCODER_FILE).is_file():
        raise FileNotFoundError(f"no pre-trained influence encoder in {path}: run `recunlearn prepare --method "
                                "unlearnrec` first")
    return json.loads((path / ENCODER_META).read_text())


def load_encoder_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path / ENCODER_FILE, weights_only=True)


def load_inputs(path: Path, n_users: int, n_items: int) -> EncoderInputs:
    state = torch.load(path / INPUT_STATE_FILE, weights_only=True)
    pending = Interactions.from_arrays(state["pending_users"].numpy(), state["pending_items"].numpy(),
                                       n_users, n_items)
    return EncoderInputs(state["e0"], state["final"], pending)


def _save_atomic(obj, target: Path) -> None:
    """Write-then-rename: an interrupted save never leaves a half-written file under the real name."""
    tmp = target.with_name(target.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(target)
