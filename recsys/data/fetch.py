"""``recsys data fetch NAME``: download a public dataset listed in ``data/manifest.yaml``, verify, extract.

For each file of the dataset's manifest entry:

1. stream the URL into ``DATA_ROOT/NAME/.<file>.part`` (a progress bar on a terminal), hashing as it goes;
   a short body (the connection closed before ``Content-Length`` bytes) is an error;
2. check its sha256 against the manifest (an unpinned file's computed sha256 is printed instead);
3. for an archive, check every member (no absolute path, no ``..``, no link pointing outside) before
   writing the listed ones into a staging folder beside them;
4. move the results into place with ``os.replace`` and record what was fetched in ``.recsys-fetch.json``.

On any failure the ``.part`` file and the staging folder are removed, and a ``.part`` is never taken as a
finished download: every run starts it afresh. A second fetch finds the files present and verified (by the
manifest's sha256, or by the hashes recorded when they were fetched) and downloads nothing.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import posixpath
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recsys.errors import ConfigError, DataError, UserError

__all__ = ["MANIFEST_ENV", "DatasetEntry", "FetchReport", "ManifestFile", "default_manifest_path", "fetch",
           "load_manifest"]

MANIFEST_ENV = "RECSYS_FETCH_MANIFEST"
RECORD_NAME = ".recsys-fetch.json"
_CHUNK = 1 << 20
_TIMEOUT_S = 60
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_relative(path: str) -> str:
    """A path inside the dataset folder: relative, ``/``-separated, without ``..`` or a dot-file name."""
    parts = PurePosixPath(path).parts
    if not path or "\\" in path or path.startswith("/") or ".." in parts or any(p.startswith(".") for p in parts):
        raise ValueError(f"{path!r} must be a relative path inside the dataset folder (no '..', no dot-files)")
    return path


class ManifestFile(BaseModel):
    """One download: a file saved as is, or an archive whose ``extract`` members are written out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    sha256: str | None  # required: null states that no checksum was published
    archive: Literal["none", "zip", "tar", "tar.gz", "tar.bz2", "tar.xz"] = "none"
    save_as: str | None = None
    extract: dict[str, str] | None = None
    header: dict[str, str] = Field(default_factory=dict)

    @field_validator("sha256")
    @classmethod
    def _check_sha256(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.fullmatch(value):
            raise ValueError(f"{value!r} is not a lower-case hex sha256")
        return value

    @model_validator(mode="after")
    def _check_targets(self) -> ManifestFile:
        scheme = urllib.parse.urlsplit(self.url).scheme
        if scheme not in ("http", "https", "file"):
            raise ValueError(f"url {self.url!r}: only http, https and file URLs are fetched")
        if self.archive == "none":
            if self.extract is not None:
                raise ValueError("extract is for archives (archive: zip or tar)")
        elif not self.extract:
            raise ValueError(f"archive {self.archive!r} needs `extract`: member -> file")
        elif self.save_as is not None:
            raise ValueError("save_as is for plain files; an archive names its files in `extract`")
        for target in self.targets:
            _check_relative(target)
        unknown = set(self.header) - set(self.targets)
        if unknown:
            raise ValueError(f"header names files this entry does not write: {sorted(unknown)}")
        return self

    @property
    def targets(self) -> list[str]:
        """The files this entry writes, relative to the dataset folder."""
        if self.extract is not None:
            return list(self.extract.values())
        return [self.save_as or posixpath.basename(urllib.parse.urlsplit(self.url).path)]


class DatasetEntry(BaseModel):
    """A dataset of the manifest: its files and what they are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    format: str = ""
    files: list[ManifestFile] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_unique(self) -> DatasetEntry:
        targets = [target for file in self.files for target in file.targets]
        if len(targets) != len(set(targets)):
            raise ValueError("two entries write the same file")
        return self


@dataclass
class FetchReport:
    """What one ``fetch`` did: files downloaded (with their computed sha256 and whether it was pinned)
    and files already present and verified."""

    folder: Path
    downloaded: list[tuple[str, str, bool]]  # (url, sha256, pinned)
    kept: list[str]

    @property
    def unpinned(self) -> list[tuple[str, str]]:
        return [(url, digest) for url, digest, pinned in self.downloaded if not pinned]


def default_manifest_path() -> Path:
    """``$RECSYS_FETCH_MANIFEST``, else ``data/manifest.yaml`` of the source tree this package is in."""
    if os.environ.get(MANIFEST_ENV):
        return Path(os.environ[MANIFEST_ENV])
    return Path(__file__).resolve().parents[2] / "data" / "manifest.yaml"


def load_manifest(path: Path | None = None) -> dict[str, DatasetEntry]:
    """The manifest's datasets by name, validated (a ``ConfigError`` names the file and the entry)."""
    path = path or default_manifest_path()
    if not path.is_file():
        raise ConfigError(f"{path}: no dataset manifest (set {MANIFEST_ENV} or pass --manifest)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of dataset name -> entry")
    entries = {}
    for name, entry in raw.items():
        try:
            entries[str(name)] = DatasetEntry.model_validate(entry)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in (name, *first["loc"]))
            raise ConfigError(f"{path}: {where}: {first['msg']}") from None
    return entries


def fetch(name: str, data_root: Path, *, force: bool = False, manifest: Path | None = None,
          progress: bool | None = None, log: Callable[[str], None] = print) -> FetchReport:
    """Download, verify and extract dataset ``name`` into ``data_root / name``.

    Args:
        name: a dataset of the manifest.
        data_root: the folder holding one folder per dataset (created if missing).
        force: download again even when the files are present and verified, replacing them.
        manifest: the manifest file (default ``default_manifest_path()``).
        progress: show a progress bar (None: only on a terminal).
        log: where the one-line notes go (print to stdout by default).

    Raises:
        UserError: ``name`` is not in the manifest.
        DataError: a download failed or was cut short, a checksum differs, an archive is unsafe or lacks
            a listed member, or a file is in the way.
    """
    entries = load_manifest(manifest)
    if name not in entries:
        raise UserError(f"unknown dataset {name!r} for fetch (known: {', '.join(sorted(entries))})")
    entry = entries[name]
    folder = data_root / name
    created = [path for path in (folder, data_root) if not path.exists()]  # removed again if left empty
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"{folder}: cannot create the dataset folder ({error.strerror})") from None
    report = FetchReport(folder=folder, downloaded=[], kept=[])
    try:
        record = _read_record(folder)
        pending = []
        for file in entry.files:
            state = _state(folder, file, record)
            if state == "verified" and not force:
                report.kept.extend(file.targets)
            elif state == "unverified" and not force:
                present = [t for t in file.targets if (folder / t).exists()]
                reason = ("differs from the manifest's sha256" if file.sha256 and file.archive == "none"
                          else "was not fetched by recsys, so it cannot be verified")
                raise DataError(f"{folder / present[0]} is in the way: it {reason} (--force replaces it)")
            else:
                pending.append(file)
        for file in pending:
            digest = _fetch_file(folder, file, record, progress)
            report.downloaded.append((file.url, digest, file.sha256 is not None))
            if file.sha256 is None:
                log(f"{file.url}: sha256 {digest} (unpinned: the manifest has no published checksum for it)")
    finally:
        for path in created:
            if not any(path.iterdir()):
                path.rmdir()
    return report


def _state(folder: Path, file: ManifestFile, record: dict) -> Literal["missing", "verified", "unverified"]:
    paths = [folder / target for target in file.targets]
    if not any(path.exists() for path in paths):
        return "missing"
    if not all(path.is_file() for path in paths):
        return "unverified"
    if file.archive == "none" and file.sha256 is not None:
        return "verified" if _sha256_of(paths[0]) == file.sha256 else "unverified"
    # Extracted or unpinned files: verified against what was recorded when they were fetched.
    for target, path in zip(file.targets, paths):
        seen = record.get(target) or {}
        same_source = seen.get("url") == file.url and (file.sha256 is None or seen.get("source_sha256") == file.sha256)
        if not same_source or seen.get("sha256") != _sha256_of(path):
            return "unverified"
    return "verified"


def _fetch_file(folder: Path, file: ManifestFile, record: dict, progress: bool | None) -> str:
    """Download one manifest file into ``folder`` and record it; returns the download's sha256."""
    part = folder / f".{posixpath.basename(urllib.parse.urlsplit(file.url).path) or 'download'}.part"
    staging: Path | None = None
    try:
        part.unlink(missing_ok=True)  # a .part left by a killed run is never resumed
        digest = _download(file.url, part, progress)
        if file.sha256 is not None and digest != file.sha256:
            raise DataError(f"{file.url}: sha256 mismatch (expected {file.sha256}, got {digest})")
        if file.archive == "none":
            written = {file.targets[0]: (part, digest)}
        else:
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
            written = _extract(part, file, staging)
        for target, (source, target_digest) in written.items():
            destination = folder / target
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, destination)
            record[target] = {"url": file.url, "source_sha256": digest, "sha256": target_digest}
        _write_record(folder, record)
        return digest
    finally:
        part.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _download(url: str, destination: Path, progress: bool | None) -> str:
    """Stream ``url`` into ``destination``; returns its sha256. A body shorter than ``Content-Length``,
    an HTTP error or a dropped connection is a ``DataError``."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "recsys-fetch"})
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response, destination.open("wb") as out:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            name = posixpath.basename(urllib.parse.urlsplit(url).path)
            with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=name, leave=False,
                      disable=None if progress is None else not progress, file=sys.stderr) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as error:
        raise DataError(f"{url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise DataError(f"{url}: download failed after {received} bytes ({type(error).__name__}: {reason})") from None
    if expected is not None and received != expected:
        raise DataError(f"{url}: download cut short ({received} of {expected} bytes)")
    return digest.hexdigest()


@dataclass(frozen=True)
class _Member:
    """An archive member: a regular file, a symbolic or hard link (with its target), or something else."""

    name: str
    kind: Literal["file", "symlink", "hardlink", "other"]
    link: str | None = None


def _extract(archive: Path, file: ManifestFile, staging: Path) -> dict[str, tuple[Path, str]]:
    """Check every member of ``archive``, then write the ``file.extract`` members into ``staging``.

    Returns:
        target -> (staged path, its sha256).
    """
    assert file.extract is not None
    with _open_archive(archive, file) as (members, open_member):
        for member in members:
            _check_member(file.url, member)
        kinds = {member.name: member.kind for member in members}
        staged = {}
        for index, (name, target) in enumerate(file.extract.items()):
            if kinds.get(name) != "file":
                problem = "has no member" if name not in kinds else "has no regular file at"
                raise DataError(f"{file.url}: archive {problem} {name!r}")
            path = staging / str(index)
            digest = hashlib.sha256()
            with open_member(name) as source, path.open("wb") as out:
                if target in file.header:
                    line = (file.header[target] + "\n").encode()
                    out.write(line)
                    digest.update(line)
                while chunk := source.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
            staged[target] = (path, digest.hexdigest())
    return staged


@contextmanager
def _open_archive(path: Path, file: ManifestFile) -> Iterator[tuple[list[_Member], Callable[[str], BinaryIO]]]:
    """Yields the archive's members (directories left out) and a function opening a member's bytes."""
    try:
        if file.archive == "zip":
            with zipfile.ZipFile(path) as archive:
                members = []
                for info in archive.infolist():
                    if stat.S_ISLNK(info.external_attr >> 16):  # a symlink stored by Info-ZIP: its target is the data
                        members.append(_Member(info.filename, "symlink", archive.read(info).decode(errors="replace")))
                    elif not info.is_dir():
                        members.append(_Member(info.filename, "file"))
                yield members, archive.open
        else:
            with tarfile.open(path, "r:*") as archive:
                members = []
                for info in archive.getmembers():
                    if info.isfile():
                        members.append(_Member(info.name, "file"))
                    elif info.issym():
                        members.append(_Member(info.name, "symlink", info.linkname))
                    elif info.islnk():
                        members.append(_Member(info.name, "hardlink", info.linkname))
                    elif not info.isdir():
                        members.append(_Member(info.name, "other"))

                def open_member(name: str) -> BinaryIO:
                    handle = archive.extractfile(name)
                    assert handle is not None  # a regular file
                    return handle

                yield members, open_member
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as error:
        raise DataError(f"{file.url}: not a readable {file.archive} archive ({error})") from None


def _escapes(path: str) -> bool:
    """Whether an archive path is absolute (POSIX or a Windows drive) or climbs out with ``..``."""
    path = path.replace("\\", "/")
    return path.startswith("/") or re.match(r"[A-Za-z]:", path) is not None or ".." in PurePosixPath(path).parts


def _check_member(url: str, member: _Member) -> None:
    """Refuse a member with an absolute path or ``..``, a link pointing outside the archive's folder, or a
    device or fifo."""
    if _escapes(member.name):
        reason = "an absolute path or '..'"
    elif member.kind == "other":
        reason = "neither a file, a folder nor a link"
    elif member.kind == "symlink" and _escapes(
            posixpath.normpath(posixpath.join(posixpath.dirname(member.name), member.link.replace("\\", "/")))):
        reason = f"a link pointing outside: {member.link!r}"
    elif member.kind == "hardlink" and _escapes(posixpath.normpath(member.link)):  # relative to the archive root
        reason = f"a link pointing outside: {member.link!r}"
    else:
        return
    raise DataError(f"{url}: unsafe archive member {member.name!r} ({reason}); nothing extracted")


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_record(folder: Path) -> dict:
    path = folder / RECORD_NAME
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(folder: Path, record: dict) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f"{RECORD_NAME}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(record, out, indent=1, sort_keys=True)
        os.replace(temporary, folder / RECORD_NAME)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
