"""The data root and downloads under failure: a broken dataset folder is reported on its own row, a mistyped
data root is an error that creates nothing, and a failed download leaves nothing behind (never over the network)."""
from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest
from typer.testing import CliRunner

from cli_helpers import assert_input_error
from recunlearn.cli import app
from recunlearn.data import download, registry
from recunlearn.data.interactions import DataError
from recunlearn.data.registry import dataset_status, list_datasets, load_dataset


def write_lightgcn(folder: Path, train: str, test: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text(train)
    (folder / "test.txt").write_text(test)


def everything_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.fixture
def no_network(monkeypatch):
    def refuse(url, timeout):
        raise AssertionError(f"a test tried to download {url}")
    monkeypatch.setattr(download, "urlopen", refuse)


# ------------------------------------------------------------------------------------------ broken folders

@pytest.fixture
def root_with_a_broken_dataset(tmp_path) -> Path:
    write_lightgcn(tmp_path / "yelp2018", "0 1 2 3 4 5 6 7 8 9 10\n", "0 11\n")
    write_lightgcn(tmp_path / "gowalla", "0 1 2\n1 x 3\n", "0 4\n")
    return tmp_path


def test_a_broken_folder_gets_its_own_row_and_the_others_are_still_listed(root_with_a_broken_dataset):
    rows = {row["dataset"]: row for row in dataset_status(root_with_a_broken_dataset)}
    assert set(rows) == set(list_datasets())
    assert rows["gowalla"]["files"] == "broken: train.txt, line 2: 'x' is not an integer id " \
                                       "(LightGCN format: `user item item ...`, integers sepa..."
    assert rows["gowalla"]["users"] == "-"
    assert rows["yelp2018"]["files"] == "present" and rows["yelp2018"]["users"] == 1
    assert rows["ml-1m"]["files"].startswith("missing")


def test_datasets_command_lists_a_broken_folder_and_exits_normally(root_with_a_broken_dataset):
    result = CliRunner().invoke(app, ["datasets", "--root", str(root_with_a_broken_dataset)])
    assert result.exit_code == 0, result.output
    assert "broken: train.txt, line 2" in next(line for line in result.stdout.splitlines() if "gowalla" in line)
    assert "present" in next(line for line in result.stdout.splitlines() if "yelp2018" in line)


# -------------------------------------------------------------------------------------------- missing root

def test_mistyped_data_variable_is_one_line_naming_it_and_creates_nothing(tmp_path, monkeypatch, no_network):
    typo = tmp_path / "dta"
    monkeypatch.setenv("RECUNLEARN_DATA", str(typo))
    for attempt in (dataset_status, lambda: load_dataset("gowalla"), lambda: load_dataset("gowalla", download=False)):
        with pytest.raises(DataError) as err:
            attempt()
        assert str(err.value).startswith(f"RECUNLEARN_DATA={typo} does not exist: set RECUNLEARN_DATA to")
    line = assert_input_error(CliRunner().invoke(app, ["datasets"]), f"RECUNLEARN_DATA={typo} does not exist")
    assert f"mkdir -p {typo}" in line
    assert everything_under(tmp_path) == []


def test_missing_root_argument_is_an_error_that_creates_nothing(tmp_path, no_network):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=f"data folder {missing} does not exist"):
        load_dataset("gowalla", missing)
    assert_input_error(CliRunner().invoke(app, ["datasets", "--root", str(missing)]),
                       f"data folder {missing} does not exist")
    a_file = tmp_path / "ratings.csv"
    a_file.write_text("user,item\n")
    line = assert_input_error(CliRunner().invoke(app, ["datasets", "--root", str(a_file)]),
                              f"data folder {a_file} is a file, not a folder")
    assert "mkdir" not in line   # the advice to create it cannot work with a file in the way
    assert not missing.exists()


def test_missing_default_root_lists_every_dataset_as_missing_without_creating_it(tmp_path, monkeypatch):
    monkeypatch.delenv("RECUNLEARN_DATA", raising=False)
    monkeypatch.setattr(registry, "DEFAULT_ROOT", tmp_path / "cache" / "data")
    assert all(row["files"].startswith("missing") for row in dataset_status())
    assert not (tmp_path / "cache").exists()


# ------------------------------------------------------------------------------------------ failed downloads

def fake_download(fail_on: str | None = None, error: Exception = URLError("no route to host")):
    """Stands in for download.download_file: writes a small file, or raises for the URL ending in `fail_on`."""
    def fetch(url, dest, md5=None):
        if fail_on is not None and url.endswith(fail_on):
            raise error
        Path(dest).write_text("0 3\n1 4\n" if Path(dest).name == "test.txt" else "0 1 2\n1 2 3\n")
        return Path(dest)
    return fetch


@pytest.mark.parametrize("error", [URLError("no route to host"), ConnectionResetError("connection reset"),
                                   DataError("checksum mismatch for test.txt")])
def test_failed_download_creates_no_folder_and_no_partial_file(tmp_path, monkeypatch, error):
    # gowalla is two files: train.txt arrives, then test.txt fails
    monkeypatch.setattr(download, "download_file", fake_download(fail_on="test.txt", error=error))
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(DataError) as err:
        load_dataset("gowalla", root)
    assert "\n" not in str(err.value)
    assert everything_under(root) == []


def test_failed_download_into_a_missing_default_root_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("RECUNLEARN_DATA", raising=False)
    monkeypatch.setattr(registry, "DEFAULT_ROOT", tmp_path / "cache" / "data")
    monkeypatch.setattr(download, "download_file", fake_download(fail_on="test.txt"))
    with pytest.raises(DataError, match=r"downloading failed \(no route to host\)\. Put the files train.txt, test.txt"):
        load_dataset("gowalla")
    assert everything_under(tmp_path) == []


def test_successful_download_moves_every_file_into_place(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "download_file", fake_download())
    root = tmp_path / "data"
    root.mkdir()
    assert load_dataset("gowalla", root).n_users == 2
    assert everything_under(root) == ["gowalla", "gowalla/test.txt", "gowalla/train.txt"]
