"""The README's "Forget a person" walk-through, run line by line as written, on a CSV made from ml-100k."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recunlearn.cli import app
from recunlearn.data.loaders import read_udata
from recunlearn.train.checkpoint import load_checkpoint

README = Path(__file__).resolve().parents[1] / "README.md"


def walkthrough_commands() -> list[list[str]]:
    text = README.read_text()
    block = re.search(r"<!-- walkthrough -->\s*```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no walk-through block"
    lines = [line.strip() for line in block.group(1).splitlines() if line.strip()]
    assert all(line.startswith("recunlearn ") for line in lines)
    return [shlex.split(line)[1:] for line in lines]


@pytest.fixture
def my_ratings(data_root, tmp_path, monkeypatch, isolated_model_cache) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECUNLEARN_LOCKS", str(tmp_path / "locks"))
    frame = read_udata(next((data_root / "ml-100k").glob("u.data*")))
    frame.to_csv(tmp_path / "my-ratings.csv", index=False)
    return tmp_path


def test_the_readme_walkthrough_runs_as_written(my_ratings):
    outputs = []
    for args in walkthrough_commands():
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, f"recunlearn {' '.join(args)}\n{result.output}"
        outputs.append(result.stdout)
    before, erasure, audit, after = outputs[2], outputs[3], outputs[5], outputs[6]
    assert "user erasure:" in erasure and "training edges to unlearn" in erasure
    assert re.search(r"^(PASS|WARN|FAIL): ", audit, re.M)
    assert "top-5" in before and "top-5" in after
    _, _, data, _ = load_checkpoint(my_ratings / "runs/mine-without-42")
    (user,) = data.user_ids.index(["42"], kind="user")
    assert not any((split.users == user).any() for split in (data.train, data.valid, data.test))
    shipped = my_ratings / "shipped/mine-without-42"
    assert sorted(p.name for p in shipped.iterdir()) == ["config.json", "weights.pt"]
    assert json.loads((shipped / "config.json").read_text())["exported"] is True
