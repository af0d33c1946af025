"""`recsys data fetch` against a local HTTP server on 127.0.0.1 serving archives built here (no test
reaches the internet): download, checksum, safe extraction, idempotence, interrupted downloads."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from recsys.cli import main
from recsys.data.fetch import RECORD_NAME, load_manifest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RATINGS = b"1\t10\t4\t100\n1\t11\t5\t101\n2\t10\t3\t102\n"
EXTRA = b"a plain file, not in an archive\n"
NOTES = b"in a nested folder of a tar.gz\n"


@dataclass
class Served:
    """What the local server answers: path -> body; paths whose body it cuts off half-way."""

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    cut_short: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[Served]:
    served = Served()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            served.requests.append(self.path)
            body = served.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.path in served.cut_short:
                # Promise the whole body, send half, close the connection.
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
                return
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    served.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, body in members.items():
            archive.writestr(zipfile.ZipInfo(name), body)
    return buffer.getvalue()


def _tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


def _sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _manifest(path: Path, entries: dict) -> Path:
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    return path


def _fetch(root: Path, manifest: Path, *extra: str, name: str = "toy") -> int:
    return main(["data", "fetch", name, "--data-root", str(root), "--manifest", str(manifest), *extra])


@pytest.fixture
def toy(server: Served, tmp_path: Path) -> dict:
    """A dataset of three downloads: a pinned zip (one member under a header), an unpinned plain file,
    and a pinned tar.gz with a member written into a subfolder."""
    ratings_zip = _zip({"toy/ratings.tsv": RATINGS, "toy/README": b"not extracted\n"})
    notes_tar = _tar({"toy/docs/notes.txt": NOTES})
    server.files.update({"/toy.zip": ratings_zip, "/extra.txt": EXTRA, "/notes.tar.gz": notes_tar})
    manifest = _manifest(tmp_path / "manifest.yaml", {"toy": {"description": "a toy", "format": "recbole", "files": [
        {"url": f"{server.base}/toy.zip", "sha256": _sha256(ratings_zip), "archive": "zip",
         "extract": {"toy/ratings.tsv": "toy.inter"}, "header": {"toy.inter": "user_id:token\titem_id:token"}},
        {"url": f"{server.base}/extra.txt", "sha256": None},
        {"url": f"{server.base}/notes.tar.gz", "sha256": _sha256(notes_tar), "archive": "tar.gz",
         "extract": {"toy/docs/notes.txt": "docs/notes.txt"}},
    ]}})
    return {"manifest": manifest, "root": tmp_path / "data"}


def _leftovers(folder: Path) -> list[str]:
    """Temporary files of a fetch: .part downloads, staging folders."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".part") or p.name.startswith(".staging"))


def test_fetch_extracts_verifies_and_a_rerun_downloads_nothing(toy: dict, server: Served, capsys) -> None:
    root, manifest = toy["root"], toy["manifest"]
    assert _fetch(root, manifest) == 0
    folder = root / "toy"
    assert (folder / "toy.inter").read_bytes() == b"user_id:token\titem_id:token\n" + RATINGS
    assert (folder / "extra.txt").read_bytes() == EXTRA
    assert (folder / "docs" / "notes.txt").read_bytes() == NOTES
    assert not (folder / "README").exists() and not (folder / "toy").exists()  # only the listed members
    assert sorted(p.name for p in folder.iterdir()) == [RECORD_NAME, "docs", "extra.txt", "toy.inter"]
    assert _leftovers(folder) == []
    out = capsys.readouterr().out
    # The unpinned file's computed sha256 is printed, and said to be unpinned.
    assert f"{server.base}/extra.txt: sha256 {_sha256(EXTRA)} (unpinned" in out
    assert "3 downloads (2 sha256-verified, 1 unpinned)" in out
    assert len(server.requests) == 3

    assert _fetch(root, manifest) == 0
    assert len(server.requests) == 3  # nothing downloaded
    assert "already fetched and verified" in capsys.readouterr().out

    # A changed file is not silently replaced; --force downloads again and restores it.
    (folder / "toy.inter").write_bytes(b"edited by hand\n")
    assert _fetch(root, manifest) == 2
    error = capsys.readouterr().err
    assert "toy.inter is in the way" in error and "--force" in error and len(error.strip().splitlines()) == 1
    assert _fetch(root, manifest, "--force") == 0
    assert (folder / "toy.inter").read_bytes() == b"user_id:token\titem_id:token\n" + RATINGS
    assert len(server.requests) == 6


def test_a_pinned_plain_file_already_there_counts_as_fetched(server: Served, tmp_path: Path, capsys) -> None:
    server.files["/train.txt"] = RATINGS
    manifest = _manifest(tmp_path / "m.yaml", {"toy": {"files": [
        {"url": f"{server.base}/train.txt", "sha256": _sha256(RATINGS)}]}})
    (tmp_path / "data" / "toy").mkdir(parents=True)
    (tmp_path / "data" / "toy" / "train.txt").write_bytes(RATINGS)  # copied by hand, say
    assert _fetch(tmp_path / "data", manifest) == 0
    assert server.requests == [] and "already fetched and verified" in capsys.readouterr().out


def test_checksum_mismatch_is_one_line_exit_2_and_leaves_nothing(toy: dict, server: Served, tmp_path: Path,
                                                                  capsys) -> None:
    wrong = "0" * 64
    manifest = _manifest(tmp_path / "wrong.yaml", {"toy": {"files": [
        {"url": f"{server.base}/toy.zip", "sha256": wrong, "archive": "zip",
         "extract": {"toy/ratings.tsv": "toy.inter"}}]}})
    root = tmp_path / "data"
    assert _fetch(root, manifest) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"{server.base}/toy.zip" in error and "sha256 mismatch" in error
    assert wrong in error and _sha256(server.files["/toy.zip"]) in error
    assert not (root / "toy").exists()  # no folder, no .part, no extracted file

    # Into a folder that was already there: it is left as it was.
    (root / "toy").mkdir(parents=True)
    (root / "toy" / "mine.txt").write_text("kept")
    assert _fetch(root, manifest) == 2
    assert sorted(p.name for p in (root / "toy").iterdir()) == ["mine.txt"]


@pytest.mark.parametrize("archive, members, links, bad", [
    ("zip", {"toy/ratings.tsv": RATINGS, "../evil.txt": b"escaped"}, None, "../evil.txt"),
    ("zip", {"toy/ratings.tsv": RATINGS, "toy/../../evil.txt": b"escaped"}, None, "toy/../../evil.txt"),
    ("tar.gz", {"toy/ratings.tsv": RATINGS, "../evil.txt": b"escaped"}, None, "../evil.txt"),
    ("tar.gz", {"toy/ratings.tsv": RATINGS, "/tmp/evil.txt": b"escaped"}, None, "/tmp/evil.txt"),
    ("tar.gz", {"toy/ratings.tsv": RATINGS}, {"toy/link": "../../outside"}, "toy/link"),
    ("tar.gz", {"toy/ratings.tsv": RATINGS}, {"toy/abs": "/etc/passwd"}, "toy/abs"),
], ids=["zip-parent", "zip-nested-parent", "tar-parent", "tar-absolute", "tar-symlink-out", "tar-symlink-abs"])
def test_unsafe_archive_members_are_refused(server: Served, tmp_path: Path, capsys, archive: str,
                                            members: dict, links: dict | None, bad: str) -> None:
    body = _zip(members) if archive == "zip" else _tar(members, links)
    server.files["/bad"] = body
    manifest = _manifest(tmp_path / "m.yaml", {"toy": {"files": [
        {"url": f"{server.base}/bad", "sha256": _sha256(body), "archive": archive,
         "extract": {"toy/ratings.tsv": "toy.inter"}}]}})
    root = tmp_path / "deep" / "data"
    assert _fetch(root, manifest) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "unsafe archive member" in error and repr(bad) in error
    assert not (root / "toy").exists()
    assert list(tmp_path.rglob("evil.txt")) == [] and not (tmp_path / "deep" / "evil.txt").exists()


def test_a_safe_link_inside_the_archive_is_allowed(server: Served, tmp_path: Path) -> None:
    body = _tar({"toy/ratings.tsv": RATINGS}, {"toy/latest.tsv": "ratings.tsv"})
    server.files["/ok.tar.gz"] = body
    manifest = _manifest(tmp_path / "m.yaml", {"toy": {"files": [
        {"url": f"{server.base}/ok.tar.gz", "sha256": _sha256(body), "archive": "tar.gz",
         "extract": {"toy/ratings.tsv": "toy.inter"}}]}})
    assert _fetch(tmp_path / "data", manifest) == 0
    assert (tmp_path / "data" / "toy" / "toy.inter").read_bytes() == RATINGS


def test_an_interrupted_download_leaves_no_half_file_and_a_rerun_succeeds(toy: dict, server: Served,
                                                                          capsys) -> None:
    root, manifest = toy["root"], toy["manifest"]
    server.cut_short.add("/toy.zip")
    assert _fetch(root, manifest) == 2
    error = capsys.readouterr().err.strip()
    body = server.files["/toy.zip"]
    assert len(error.splitlines()) == 1 and f"{server.base}/toy.zip" in error
    assert f"cut short ({len(body) // 2} of {len(body)} bytes)" in error
    assert not (root / "toy").exists()

    # A complete .part left by a killed run is not taken as the download: it is fetched again.
    folder = root / "toy"
    folder.mkdir(parents=True)
    (folder / ".toy.zip.part").write_bytes(body)
    assert _fetch(root, manifest) == 2
    assert "cut short" in capsys.readouterr().err
    assert list(folder.iterdir()) == []

    server.cut_short.clear()
    requests = len(server.requests)
    assert _fetch(root, manifest) == 0
    assert len(server.requests) == requests + 3
    assert (folder / "toy.inter").read_bytes() == b"user_id:token\titem_id:token\n" + RATINGS
    assert _leftovers(folder) == []


def test_a_failure_after_earlier_files_keeps_them_and_a_rerun_fetches_only_the_rest(toy: dict, server: Served,
                                                                                  capsys) -> None:
    root, manifest = toy["root"], toy["manifest"]
    server.cut_short.add("/notes.tar.gz")
    assert _fetch(root, manifest) == 2
    assert sorted(p.name for p in (root / "toy").iterdir()) == [RECORD_NAME, "extra.txt", "toy.inter"]
    server.cut_short.clear()
    server.requests.clear()
    assert _fetch(root, manifest) == 0
    assert server.requests == ["/notes.tar.gz"]
    assert "2 files were already there and verified" in capsys.readouterr().out


def test_unknown_dataset_and_http_errors_are_exit_2(toy: dict, server: Served, tmp_path: Path, capsys) -> None:
    assert _fetch(toy["root"], toy["manifest"], name="nope") == 2
    error = capsys.readouterr().err
    assert "unknown dataset 'nope'" in error and "known: toy" in error
    manifest = _manifest(tmp_path / "m.yaml", {"toy": {"files": [{"url": f"{server.base}/gone.txt", "sha256": None}]}})
    assert _fetch(tmp_path / "data", manifest) == 2
    assert "HTTP 404" in capsys.readouterr().err
    assert not (tmp_path / "data" / "toy").exists()


@pytest.mark.parametrize("entry, message", [
    ({"url": "http://x/a.zip", "archive": "zip", "extract": {"a": "b"}}, "sha256"),
    ({"url": "http://x/a.zip", "sha256": "abc", "archive": "zip", "extract": {"a": "b"}}, "sha256"),
    ({"url": "http://x/a.zip", "sha256": None, "archive": "zip"}, "extract"),
    ({"url": "http://x/a.zip", "sha256": None, "archive": "zip", "extract": {"a": "../b"}}, "relative path"),
    ({"url": "http://x/a.txt", "sha256": None, "save_as": "/etc/a"}, "relative path"),
    ({"url": "ftp://x/a.txt", "sha256": None}, "only http"),
    ({"url": "http://x/a.txt", "sha256": None, "checksum": "x"}, "checksum"),
])
def test_manifest_mistakes_name_the_entry(tmp_path: Path, capsys, entry: dict, message: str) -> None:
    manifest = _manifest(tmp_path / "m.yaml", {"toy": {"files": [entry]}})
    assert _fetch(tmp_path / "data", manifest) == 2
    error = capsys.readouterr().err
    assert f"{manifest}: toy.files.0" in error and message in error


# The shipped manifest --------------------------------------------------------------------------------

SHIPPED = ("ml-100k", "ml-1m", "gowalla", "yelp2018", "amazon-book", "yoochoose", "diginetica", "otto", "coat")


def test_the_shipped_manifest_lists_the_issue_datasets() -> None:
    entries = load_manifest(Path(__file__).resolve().parents[1] / "data" / "manifest.yaml")
    assert set(SHIPPED) <= set(entries)
    for name, entry in entries.items():
        for file in entry.files:
            assert file.url.startswith("https://"), (name, file.url)


@pytest.mark.parametrize("name", [n for n in SHIPPED if n != "amazon-book"])
def test_the_shipped_manifest_matches_the_shared_folder_layout(name: str) -> None:
    """Each dataset's files are those of ../shared/data/NAME (README and SOURCE aside), and every pinned
    plain file's sha256 is that of the copy there."""
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} missing")
    entry = load_manifest(Path(__file__).resolve().parents[1] / "data" / "manifest.yaml")[name]
    targets = {target for file in entry.files for target in file.targets}
    shared = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"SOURCE.md"}
    assert targets == shared
    for file in entry.files:
        if file.sha256 is not None and file.archive == "none":
            assert _sha256((folder / file.targets[0]).read_bytes()) == file.sha256, file.url


def test_the_ml100k_entry_rebuilds_recbole_inter_from_grouplens_u_data(server: Served, tmp_path: Path) -> None:
    """The shipped ml-100k entry, served locally: a zip laid out like GroupLens' (``ml-100k/u.data``, which
    is RecBole's ml-100k.inter without its header line) gives back RecBole's file byte for byte."""
    inter = SHARED_DATA / "ml-100k" / "ml-100k.inter"
    if not inter.is_file():
        pytest.skip(f"{inter} missing")
    shipped = load_manifest(Path(__file__).resolve().parents[1] / "data" / "manifest.yaml")["ml-100k"]
    grouplens = shipped.files[0]
    u_data = inter.read_bytes().split(b"\n", 1)[1]
    body = _zip({"ml-100k/u.data": u_data, "ml-100k/u.item": b"1|Toy Story (1995)|...\n"})
    server.files["/ml-100k.zip"] = body
    entry = grouplens.model_dump() | {"url": f"{server.base}/ml-100k.zip", "sha256": _sha256(body)}
    manifest = _manifest(tmp_path / "m.yaml", {"ml-100k": {"files": [entry]}})
    assert _fetch(tmp_path / "data", manifest, name="ml-100k") == 0
    assert (tmp_path / "data" / "ml-100k" / "ml-100k.inter").read_bytes() == inter.read_bytes()
