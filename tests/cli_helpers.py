"""Assertions and file readers shared by the command-line tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def assert_input_error(result, *fragments: str) -> str:
    """Exit code 2 and a one-line message on stderr that names the problem, without a traceback."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def tensors_in(path: Path) -> list[torch.Tensor]:
    """Every tensor or array stored in any file under `path` (weights, state files, arrays)."""
    found = []
    for file in path.rglob("*"):
        if file.suffix == ".pt":
            state = torch.load(file, weights_only=True)
            found += [v for v in (state.values() if isinstance(state, dict) else [state]) if torch.is_tensor(v)]
        elif file.suffix == ".npz":
            with np.load(file) as z:
                found += [torch.from_numpy(z[k]) for k in z.files]
        elif file.suffix == ".npy":
            found.append(torch.from_numpy(np.load(file)))
    return found


def json_leaves(tree):
    """Every value in a JSON-like tree of dicts (lists count as values)."""
    if isinstance(tree, dict):
        for value in tree.values():
            yield from json_leaves(value)
    else:
        yield tree
