"""Fetch the benchmark datasets from their official public sources, verified and written atomically.

A dataset's files are downloaded into a temporary folder beside the destination and moved into place only
after every one of them arrived and its checksum matched, so a failed download creates nothing: no partial
file, no empty folder.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator
from http.client import HTTPException
from urllib.error import URLError
from urllib.request import urlopen

from tqdm import tqdm

from .interactions import DataError

CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 60
GROUPLENS = "https://files.grouplens.org/datasets/movielens"
LIGHTGCN = "https://raw.githubusercontent.com/kuandeng/LightGCN/master/Data"
# The commit whose Datasets/tiktok files the checksums below were taken from.
DIFFMM = "https://raw.githubusercontent.com/HKUDS/DiffMM/fae20e642aeeaad4284be6f7fb3432ebb551da8e/Datasets/tiktok"


@dataclass(frozen=True)
class RemoteFile:
    """A file saved as `name` in the dataset folder; `member` is its path inside the archive, if any."""

    name: str
    md5: str | None = None
    member: str | None = None


@dataclass(frozen=True)
class Remote:
    """One URL: a single file (`files` has one entry, checked with `md5`) or a zip archive with members."""

    url: str
    md5: str | None
    files: tuple[RemoteFile, ...]

    @property
    def is_archive(self) -> bool:
        return self.url.endswith(".zip")


def _lightgcn(name: str, train_md5: str | None, test_md5: str | None) -> tuple[Remote, ...]:
    return (Remote(f"{LIGHTGCN}/{name}/train.txt", train_md5, (RemoteFile("train.txt"),)),
            Remote(f"{LIGHTGCN}/{name}/test.txt", test_md5, (RemoteFile("test.txt"),)))


def _diffmm(*names_md5: tuple[str, str]) -> tuple[Remote, ...]:
    return tuple(Remote(f"{DIFFMM}/{name}", md5, (RemoteFile(name),)) for name, md5 in names_md5)


# Archives: the md5 GroupLens publishes, which covers every member. Members and plain files: the md5 of copies
# verified against independent ones (u.data: the published md5). None: no trusted value, saved unchecked.
SOURCES: dict[str, tuple[Remote, ...]] = {
    "ml-100k": (Remote(f"{GROUPLENS}/ml-100k.zip", "0e33842e24a9c977be4e0107933c0723", (
        RemoteFile("u.data", "6e47046882bad158b0efbb84cd5cb987", "ml-100k/u.data"),
        RemoteFile("u.item", None, "ml-100k/u.item"),
        RemoteFile("u.user", None, "ml-100k/u.user"),
        RemoteFile("u.genre", None, "ml-100k/u.genre"),
        RemoteFile("README", None, "ml-100k/README"),
    )),),
    "ml-1m": (Remote(f"{GROUPLENS}/ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906", (
        RemoteFile("ratings.dat", None, "ml-1m/ratings.dat"),
        RemoteFile("movies.dat", "ef9fd9ff8d1b33faf73e2122c371e910", "ml-1m/movies.dat"),
        RemoteFile("users.dat", "681c0711d0d4548cd3d4718a49c2dcd8", "ml-1m/users.dat"),
        RemoteFile("README", None, "ml-1m/README"),
    )),),
    "gowalla": _lightgcn("gowalla", "5eec1eb2edb8dd648377d348b8e136cf", "c04e2c4bcd2389f53ed8281816166149"),
    "yelp2018": _lightgcn("yelp2018", None, None),
    "tiktok": _diffmm(("trnMat.pkl", "48fb42d3cbb0b687dc3552b2b292ef9a"),
                      ("valMat.pkl", "bd444b595c916edce998faecda42c07f"),
                      ("tstMat.pkl", "aa9e72fda92c471d7329939e3031d8b7"),
                      ("image_feat.npy", "f6527b50d983b46af95fee047e34b099"),
                      ("audio_feat.npy", "9204046d4d394c0990125d73671580e5")),
}


def download_dataset(name: str, folder: str | Path, *, expected: str = "") -> list[Path]:
    """Download dataset `name` into `folder` (files already there are kept); returns the files saved.

    Nothing is written to `folder`, nor is it created, unless every missing file arrived intact. A network or
    file-system failure becomes a DataError that says which files to put where, and from which URL; a
    checksum mismatch becomes a DataError naming the URL and both checksums.
    """
    if name not in SOURCES:
        raise DataError(f"no download source for {name!r}; known: {sorted(SOURCES)}")
    folder = Path(folder)
    # Staged beside the destination when its parent exists (a rename, not a copy), else in the system's temp.
    staging_parent = folder.parent if folder.parent.is_dir() else None
    try:
        with tempfile.TemporaryDirectory(dir=staging_parent, prefix=f".{folder.name}.download-") as scratch:
            staged: list[Path] = []
            for remote in SOURCES[name]:
                missing = [f for f in remote.files if not (folder / f.name).exists()]
                if missing:
                    staged += _fetch_remote(remote, missing, Path(scratch))
            return _move_into(staged, folder)
    except (URLError, OSError, HTTPException) as err:
        raise missing_data_error(name, folder, expected, f"downloading failed ({_reason(err)})") from None


def _move_into(staged: list[Path], folder: Path) -> list[Path]:
    """Move complete, verified files into `folder`, creating it only now."""
    if not staged:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.move(str(path), str(folder / path.name))) for path in staged]


def missing_data_error(name: str, folder: Path, expected: str, why: str) -> DataError:
    """The error for data that is not there: what is missing, where it goes and where to get it."""
    looked_for = f" (looked for {expected})" if expected else ""
    remotes = SOURCES.get(name, ())
    names = ", ".join(f.name for remote in remotes for f in remote.files)
    urls = "; ".join(_describe(remote) for remote in remotes)
    return DataError(f"{name}: data not found in {folder}{looked_for}; {why}. "
                     f"Put the files {names} in $RECUNLEARN_DATA/{name}/ (here: {folder}), from: {urls}")


def _describe(remote: Remote) -> str:
    if remote.is_archive:
        return f"{remote.url} (unzip {', '.join(f.member or f.name for f in remote.files)})"
    return remote.url


def _reason(err: BaseException) -> str:
    return str(getattr(err, "reason", None) or err)


def _fetch_remote(remote: Remote, wanted: list[RemoteFile], folder: Path) -> list[Path]:
    if not remote.is_archive:
        return [download_file(remote.url, folder / wanted[0].name, remote.md5)]
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as scratch:
        archive = download_file(remote.url, Path(scratch) / "archive.zip", remote.md5)
        return [extract_member(archive, f.member or f.name, folder / f.name, f.md5) for f in wanted]


def download_file(url: str, dest: str | Path, md5: str | None = None) -> Path:
    """Stream `url` to `dest`, renaming into place only after the md5 (when given) matches."""
    with urlopen(url, timeout=TIMEOUT_SECONDS) as response:
        size = response.headers.get("Content-Length") if response.headers else None
        with tqdm(total=int(size) if size else None, unit="B", unit_scale=True, desc=Path(dest).name,
                  disable=None, leave=False) as bar:
            return save_verified(_chunks(response, bar.update), Path(dest), md5, url)


def extract_member(archive: str | Path, member: str, dest: str | Path, md5: str | None = None) -> Path:
    """Copy one member of a zip archive to `dest`, atomically and checked against `md5` when given."""
    with zipfile.ZipFile(archive) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise DataError(f"{archive} has no member {member}") from None
        with zf.open(info) as fh:
            return save_verified(_chunks(fh), Path(dest), md5, f"{member} in the downloaded archive")


def save_verified(chunks: Iterable[bytes], dest: Path, md5: str | None, source: str) -> Path:
    """Write `chunks` to a temporary file beside `dest`; rename it to `dest` only if its md5 matches."""
    digest = hashlib.md5()
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
        if md5 is not None and digest.hexdigest() != md5.lower():
            raise DataError(f"checksum mismatch for {source}: md5 {digest.hexdigest()}, expected {md5}; "
                            f"{dest} was not written (retry, or check that the source has not changed)")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _chunks(stream: BinaryIO, progress: Callable[[int], object] | None = None) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK_BYTES):
        if progress is not None:
            progress(len(chunk))
        yield chunk
