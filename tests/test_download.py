"""Tests for melrepro.data.download against a local HTTP server on 127.0.0.1 (no other network)."""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import put_on_path

from melrepro.data import download
from melrepro.data.download import (
    ChecksumMismatchError,
    DownloadError,
    download_archive_file,
    download_archive_melanomas,
    isic_download_command,
    link_archive_file,
    read_checksums,
    sha256_file,
    verify_archives,
)
from melrepro.data.layouts import DATASETS, layout

DATASET = "isic2019"
ZIP = "ISIC_2019_Training_Input.zip"
CSV = "ISIC_2019_Training_GroundTruth.csv"
QUERY = 'diagnosis_3:"Melanoma Invasive" OR diagnosis_3:"Melanoma in situ"'
#: Small reads, so a 60 kB file takes several chunks.
FAST = {"retries": 2, "timeout_s": 5, "backoff_s": 0, "chunk_mb": 1 / 64}


def _zip_bytes() -> bytes:
    """A small, valid zip laid out like the official one, with incompressible members."""
    buffer = io.BytesIO()
    rng = random.Random(0)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i in range(3):
            member = f"ISIC_2019_Training_Input/ISIC_{i:07d}.jpg"
            archive.writestr(member, rng.randbytes(20_000))
    return buffer.getvalue()


CSV_BYTES = b"image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\nISIC_0000000,1.0,0,0,0,0,0,0,0,0\n"
META = "ISIC_2019_Training_Metadata.csv"
META_BYTES = b"image,age_approx,anatom_site_general,lesion_id,sex\nISIC_0000000,55,head,L1,male\n"


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; ``server.plan[path]`` lists how to answer the next requests.

    Plans: ``ok``; ``404``/``500``; ``cut`` (half the body, then close); ``truncate`` (announce
    the full length, send 100 bytes less); ``norange`` (ignore ``Range``, send all with 200);
    ``nolength`` (no Content-Length, send all but the last 10 bytes, close: a cut nobody sees).
    ``server.sticky[path]`` applies when the plan is empty.
    Range requests (``bytes=N-``) are honoured with 206 or 416.
    """

    def log_message(self, *args):  # keep pytest output quiet
        pass

    def do_GET(self):
        server = self.server
        path = self.path.split("?")[0]
        server.requests.append((self.path, self.headers.get("Range")))
        plan = server.plan.get(path) or []
        how = plan.pop(0) if plan else server.sticky.get(path, "ok")
        if how.isdigit() or path not in server.files:
            self.send_error(int(how) if how.isdigit() else 404)
            return
        content = server.files[path]
        start = 0
        found = re.match(
            r"bytes=(\d+)-$", self.headers.get("Range", "") if how != "norange" else ""
        )
        if found:
            start = int(found.group(1))
            if start >= len(content):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(content)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        else:
            self.send_response(200)
        body = content[start:]
        if how == "nolength":
            self.end_headers()
            self.wfile.write(body[:-10])
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if how == "cut":
            body = body[: len(body) // 2]
        elif how == "truncate":
            body = body[: max(0, len(body) - 100)]
        self.wfile.write(body)
        self.wfile.flush()


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1 with mirrors ``/a/`` and ``/b/``."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.plan, httpd.sticky, httpd.requests = {}, {}, {}, []
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.hosts = [f"{httpd.base}/a/{{year}}/", f"{httpd.base}/b/{{year}}/"]
    for mirror in ("a", "b"):
        httpd.files[f"/{mirror}/2019/{ZIP}"] = _zip_bytes()
        httpd.files[f"/{mirror}/2019/{CSV}"] = CSV_BYTES
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def lock(tmp_path):
    """A header-only checksum lock, like the committed one."""
    path = tmp_path / "config" / "archive_checksums.tsv"
    path.parent.mkdir()
    path.write_text("dataset\tfile\tsha256\tbytes\n")
    return path


def _out(tmp_path, name=ZIP):
    return tmp_path / "resources" / "archives" / DATASET / name


def test_lock_file_in_repository_is_header_only():
    """Check the committed lock parses and has the documented columns."""
    path = Path(__file__).parents[1] / "config" / "archive_checksums.tsv"
    assert path.read_text().splitlines()[0] == "dataset\tfile\tsha256\tbytes"
    read_checksums(path)


def test_full_download_records_new_checksum(server, lock, tmp_path):
    """Check a first download is byte-identical, recorded in the lock and reported as new."""
    out = _out(tmp_path)
    status = download_archive_file(
        DATASET, ZIP, out, checksums=lock, hosts=server.hosts, dataverse_api=None, **FAST
    )
    assert out.read_bytes() == _zip_bytes()
    sha, size = sha256_file(out)
    assert (status.status, status.sha256, status.bytes) == ("recorded", sha, size)
    assert status.source == f"{server.base}/a/2019/{ZIP}"
    assert read_checksums(lock) == {(DATASET, ZIP): (sha, size)}
    assert lock.read_text() == f"dataset\tfile\tsha256\tbytes\n{DATASET}\t{ZIP}\t{sha}\t{size}\n"
    assert not out.with_name(ZIP + ".part").exists()
    # The same file again is now verified against the recorded entry.
    again = download_archive_file(
        DATASET, ZIP, out, checksums=lock, hosts=server.hosts, dataverse_api=None, **FAST
    )
    assert again.status == "verified"


def test_cut_download_resumes_with_range(server, lock, tmp_path):
    """Check a connection closed half-way is resumed with a Range request, byte-identical."""
    server.plan[f"/a/2019/{ZIP}"] = ["cut"]
    out = _out(tmp_path)
    status = download_archive_file(
        DATASET, ZIP, out, checksums=lock, hosts=server.hosts, dataverse_api=None, **FAST
    )
    half = len(_zip_bytes()) // 2
    assert server.requests == [(f"/a/2019/{ZIP}", None), (f"/a/2019/{ZIP}", f"bytes={half}-")]
    assert out.read_bytes() == _zip_bytes()
    assert status.status == "recorded"


def test_server_ignoring_range_restarts_from_zero(server, lock, tmp_path):
    """Check a resume answered with 200 (whole file) overwrites the part instead of appending."""
    server.plan[f"/a/2019/{ZIP}"] = ["cut", "norange"]
    out = _out(tmp_path)
    download_archive_file(
        DATASET, ZIP, out, checksums=lock, hosts=server.hosts, dataverse_api=None, **FAST
    )
    assert server.requests[1][1] is not None  # it did ask for a range
    assert out.read_bytes() == _zip_bytes()


@pytest.mark.parametrize("code", ["404", "500"])
def test_failing_first_mirror_falls_back_to_second(server, lock, tmp_path, code):
    """Check a 404 or 500 from the current host makes the download use the mirror."""
    server.sticky[f"/a/2019/{CSV}"] = code
    out = _out(tmp_path, CSV)
    status = download_archive_file(
        DATASET, CSV, out, checksums=lock, hosts=server.hosts, dataverse_api=None, **FAST
    )
    assert [path for path, _ in server.requests] == [f"/a/2019/{CSV}", f"/b/2019/{CSV}"]
    assert status.source == f"{server.base}/b/2019/{CSV}"
    assert out.read_bytes() == CSV_BYTES


def test_all_mirrors_failing_raises_after_retries(server, lock, tmp_path):
    """Check a 500 everywhere is retried `retries` times per mirror, then raises."""
    for mirror in "ab":
        server.sticky[f"/{mirror}/2019/{CSV}"] = "500"
    with pytest.raises(DownloadError, match=rf"could not download {CSV}.*HTTP 500"):
        download_archive_file(
            DATASET, CSV, _out(tmp_path, CSV), checksums=lock, hosts=server.hosts, **FAST
        )
    assert len(server.requests) == 2 * (FAST["retries"] + 1)


def test_wrong_checksum_keeps_file_aside_and_raises(server, lock, tmp_path):
    """Check a lock mismatch leaves nothing at the final name and names file and both hashes."""
    expected = "0" * 64
    lock.write_text(
        f"dataset\tfile\tsha256\tbytes\n{DATASET}\t{ZIP}\t{expected}\t{len(_zip_bytes())}\n"
    )
    actual = hashlib.sha256(_zip_bytes()).hexdigest()
    out = _out(tmp_path)
    with pytest.raises(
        ChecksumMismatchError, match=rf"{re.escape(ZIP)}.*{expected}.*{actual}"
    ) as info:
        download_archive_file(
            DATASET, ZIP, out, checksums=lock, hosts=server.hosts, dataverse_api=None, **FAST
        )
    kept = tmp_path / "resources" / "rejected" / DATASET / f"{ZIP}.rejected-{actual[:12]}"
    assert (info.value.file, info.value.expected, info.value.actual) == (ZIP, expected, actual)
    assert info.value.kept == kept
    assert not out.exists()
    assert not out.with_name(ZIP + ".part").exists()
    assert kept.read_bytes() == _zip_bytes()
    assert read_checksums(lock)[DATASET, ZIP][0] == expected  # the lock is not rewritten


def test_truncated_transfer_is_not_accepted(server, lock, tmp_path):
    """Check a server that always sends fewer bytes than announced never yields a file."""
    server.sticky[f"/a/2019/{ZIP}"] = "truncate"
    server.sticky[f"/b/2019/{ZIP}"] = "truncate"
    out = _out(tmp_path)
    with pytest.raises(DownloadError, match=r"kept in .*\.part"):
        download_archive_file(
            DATASET, ZIP, out, checksums=lock, hosts=server.hosts, dataverse_api=None, **FAST
        )
    assert not out.exists()
    assert read_checksums(lock) == {}
    # what did arrive is kept for the next run to resume
    assert out.with_name(ZIP + ".part").stat().st_size == len(_zip_bytes()) - 100


def test_truncated_zip_on_server_is_rejected(server, lock, tmp_path):
    """Check a zip cut short at the source (size consistent) fails the zip check, kept aside."""
    short = _zip_bytes()[:-300]
    server.files[f"/a/2019/{ZIP}"] = short
    out = _out(tmp_path)
    with pytest.raises(DownloadError, match="not a readable zip"):
        download_archive_file(
            DATASET, ZIP, out, checksums=lock, hosts=server.hosts, dataverse_api=None, **FAST
        )
    assert not out.exists()
    assert read_checksums(lock) == {}
    sha = hashlib.sha256(short).hexdigest()
    rejected = tmp_path / "resources" / "rejected" / DATASET
    assert (rejected / f"{ZIP}.rejected-{sha[:12]}").read_bytes() == short


def test_complete_part_file_is_finished_without_download(server, lock, tmp_path):
    """Check a leftover complete .part (416 on resume) is accepted without a new body."""
    out = _out(tmp_path, CSV)
    out.parent.mkdir(parents=True)
    out.with_name(CSV + ".part").write_bytes(CSV_BYTES)
    status = download_archive_file(
        DATASET, CSV, out, checksums=lock, hosts=server.hosts, dataverse_api=None, **FAST
    )
    assert server.requests == [(f"/a/2019/{CSV}", f"bytes={len(CSV_BYTES)}-")]
    assert out.read_bytes() == CSV_BYTES
    assert status.status == "recorded"


def test_ham10000_is_resolved_on_dataverse(server, lock, tmp_path):
    """Check the HAM10000 metadata is looked up by name in the Dataverse listing first."""
    listing = {
        "status": "OK",
        "data": [
            {"label": "other.zip", "dataFile": {"id": 7, "filename": "other.zip"}},
            {
                "label": "HAM10000_metadata.tab",
                "dataFile": {
                    "id": 42,
                    "filename": "HAM10000_metadata.tab",
                    "originalFileName": "HAM10000_metadata.csv",
                },
            },
        ],
    }
    server.files["/dv/api/datasets/:persistentId/versions/:latest-published/files"] = json.dumps(
        listing
    ).encode()
    ham = (
        b"lesion_id,image_id,dx,dx_type,age,sex,localization\nHAM_1,ISIC_1,mel,histo,50,male,back\n"
    )
    server.files["/dv/api/access/datafile/42"] = ham
    out = tmp_path / "HAM10000_metadata.csv"
    status = download_archive_file(
        "isic2018_task3",
        "HAM10000_metadata.csv",
        out,
        checksums=lock,
        hosts=server.hosts,
        dataverse_api=f"{server.base}/dv",
        **FAST,
    )
    assert status.source == f"{server.base}/dv/api/access/datafile/42?format=original"
    assert out.read_bytes() == ham
    assert "persistentId=doi%3A10.7910%2FDVN%2FDBW86T" in server.requests[0][0]


def test_ham10000_test_ground_truth_is_found_by_its_dataverse_name(server, monkeypatch):
    """Check the HAM10000 form of the task-3 test ground truth, kept as HAM10000_TEST_METADATA,
    is looked up on Dataverse as ISIC2018_Task3_Test_GroundTruth (a tabular upload), with the
    datafile's fixed address next."""
    from melrepro.data.download import remote_urls
    from melrepro.data.layouts import HAM10000_TEST_METADATA

    listing = {
        "status": "OK",
        "data": [
            {
                "label": "ISIC2018_Task3_Test_GroundTruth.tab",
                "dataFile": {"id": 6924466, "filename": "ISIC2018_Task3_Test_GroundTruth.tab"},
            },
        ],
    }
    server.files["/dv/api/datasets/:persistentId/versions/:latest-published/files"] = json.dumps(
        listing
    ).encode()
    urls = remote_urls(
        "isic2018_task3", HAM10000_TEST_METADATA, dataverse_api=f"{server.base}/dv", timeout_s=5
    )
    assert urls[0] == f"{server.base}/dv/api/access/datafile/6924466?format=original"
    assert urls[1] == "https://dataverse.harvard.edu/api/access/datafile/6924466?format=original"


def test_unofficial_file_name_is_refused(lock, tmp_path):
    """Check a name that is not an official file of the dataset is refused before any request."""
    with pytest.raises(ValueError, match="not an official downloadable file of isic2019"):
        download_archive_file(DATASET, "evil.zip", tmp_path / "x", checksums=lock)
    with pytest.raises(ValueError, match="download_archive_melanomas"):
        download.remote_urls("isic_archive_melanoma", "images/metadata.csv")


# ----------------------------------------------------------------------------- archive_dir


@pytest.mark.parametrize("nested", [True, False], ids=["under-dataset", "flat"])
def test_archive_dir_link_is_verified(lock, tmp_path, nested):
    """Check a file from archive_dir is linked, recorded, then verified on the next link."""
    archive_dir = tmp_path / "mine"
    source = archive_dir / DATASET / CSV if nested else archive_dir / CSV
    source.parent.mkdir(parents=True)
    source.write_bytes(CSV_BYTES)
    out = _out(tmp_path, CSV)
    status = link_archive_file(DATASET, CSV, out, archive_dir=archive_dir, checksums=lock)
    assert out.is_symlink()
    assert out.resolve() == source.resolve()
    relative = f"{DATASET}/{CSV}" if nested else CSV
    assert (status.status, status.source) == ("recorded", f"archive_dir/{relative}")
    assert link_archive_file(DATASET, CSV, out, archive_dir=archive_dir, checksums=lock).status == (
        "verified"
    )


def test_archive_dir_mismatch_leaves_user_file_alone(lock, tmp_path):
    """Check a wrong file in archive_dir raises, creates nothing at the final name, keeps the source."""
    archive_dir = tmp_path / "mine"
    archive_dir.mkdir()
    (archive_dir / CSV).write_bytes(CSV_BYTES + b"ISIC_0000009,0,1,0,0,0,0,0,0,0\n")
    lock.write_text(
        "dataset\tfile\tsha256\tbytes\n"
        f"{DATASET}\t{CSV}\t{hashlib.sha256(CSV_BYTES).hexdigest()}\t{len(CSV_BYTES)}\n"
    )
    out = _out(tmp_path, CSV)
    with pytest.raises(ChecksumMismatchError, match=CSV):
        link_archive_file(DATASET, CSV, out, archive_dir=archive_dir, checksums=lock)
    assert not out.exists()
    assert not out.is_symlink()
    assert (archive_dir / CSV).read_bytes() == CSV_BYTES + b"ISIC_0000009,0,1,0,0,0,0,0,0,0\n"


def test_archive_dir_copies_when_symlink_impossible(lock, tmp_path, monkeypatch):
    """Check the file is copied (and verified) when the filesystem refuses symlinks."""

    def refuse(self, target):
        raise OSError("symlinks not supported")

    monkeypatch.setattr(Path, "symlink_to", refuse)
    (tmp_path / CSV).write_bytes(CSV_BYTES)
    out = _out(tmp_path, CSV)
    status = link_archive_file(DATASET, CSV, out, archive_dir=tmp_path, checksums=lock)
    assert not out.is_symlink()
    assert out.read_bytes() == CSV_BYTES
    assert status.status == "recorded"


def test_archive_dir_missing_file_lists_places(lock, tmp_path):
    """Check a file absent from archive_dir fails with both places it was looked for."""
    with pytest.raises(FileNotFoundError, match=rf"{DATASET}/{CSV} and .*mine/{CSV}"):
        link_archive_file(
            DATASET, CSV, _out(tmp_path, CSV), archive_dir=tmp_path / "mine", checksums=lock
        )


# ----------------------------------------------------------------------------- isic-cli

FAKE_ISIC = """#!{python}
import json, os, sys
from pathlib import Path
Path(os.environ["FAKE_ISIC_ARGS"]).write_text(json.dumps(sys.argv[1:]))
with open(os.environ["FAKE_ISIC_ARGS"] + ".calls", "a") as calls:
    calls.write("call\\n")
out = Path(sys.argv[-1])
out.mkdir(parents=True, exist_ok=True)
ids = ["ISIC_0000001", "ISIC_0000002"]
(out / "metadata.csv").write_text("isic_id,diagnosis_3\\n" + "".join(f"{{i}},Melanoma Invasive\\n" for i in ids))
(out / "attribution.txt").write_text("someone")
for i in ids[: int(os.environ.get("FAKE_ISIC_JPGS", "2"))]:
    (out / f"{{i}}.jpg").write_bytes(b"\\xff\\xd8" + i.encode())
sys.exit(int(os.environ.get("FAKE_ISIC_EXIT", "0")))
"""


@pytest.fixture
def fake_isic(tmp_path, monkeypatch):
    """A fake `isic` on PATH that writes two jpgs and metadata.csv into its OUTDIR."""
    put_on_path(tmp_path, monkeypatch, "isic", FAKE_ISIC.format(python=sys.executable))
    monkeypatch.setenv("FAKE_ISIC_ARGS", str(tmp_path / "args.json"))
    return tmp_path / "args.json"


def test_isic_command_line():
    """Check the isic-cli call: image download, -s QUERY (as --search), --limit N, OUTDIR."""
    assert isic_download_command(QUERY, "out/images", limit=300) == [
        "isic", "image", "download", "--search", QUERY, "--limit", "300", "out/images",
    ]  # fmt: skip


def test_isic_command_line_is_accepted_by_isic_cli():
    """Check the real isic-cli knows these options (its --help, no network)."""
    isic = shutil.which("isic", path=str(Path(sys.executable).parent)) or shutil.which("isic")
    if isic is None:
        pytest.skip("isic-cli is not installed")
    help_text = subprocess.run(
        [isic, "image", "download", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--search" in help_text
    assert "--limit" in help_text


def test_melanomas_runner_checks_and_records(fake_isic, lock, tmp_path):
    """Check the runner calls isic with the query and limit, and records metadata and jpgs."""
    outdir = tmp_path / "resources" / "archives" / "isic_archive_melanoma" / "images"
    statuses = download_archive_melanomas(outdir, query=QUERY, limit=2, checksums=lock)
    args = json.loads(fake_isic.read_text())
    assert args[:-1] == ["image", "download", "--search", QUERY, "--limit", "2"]
    # isic-cli writes into the download cache, outside the rule's output folder
    assert Path(args[-1]).is_relative_to(tmp_path / "resources" / "download_cache")
    assert (outdir / "ISIC_0000001.jpg").read_bytes() == b"\xff\xd8ISIC_0000001"
    names = [s.file for s in statuses]
    assert names == ["images/metadata.csv", "images/ISIC_0000001.jpg", "images/ISIC_0000002.jpg"]
    assert {s.status for s in statuses} == {"recorded"}
    assert {f for d, f in read_checksums(lock) if d == "isic_archive_melanoma"} == set(names)


def _melanoma_out(tmp_path):
    return tmp_path / "resources" / "archives" / "isic_archive_melanoma" / "images"


def _calls(fake_isic):
    calls = Path(str(fake_isic) + ".calls")
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def test_melanoma_mismatch_survives_the_failed_job(fake_isic, lock, tmp_path):
    """Check a mismatching melanoma is kept outside the output folder, which Snakemake deletes
    after the failed job, and the images that passed stay in the download cache (issue 21.1)."""
    outdir = tmp_path / "resources" / "archives" / "isic_archive_melanoma" / "images"
    download_archive_melanomas(outdir, query=QUERY, limit=2, checksums=lock)
    assert _calls(fake_isic) == 1
    shutil.rmtree(outdir)
    # A rerun with a complete download cache does not fetch again.
    download_archive_melanomas(outdir, query=QUERY, limit=2, checksums=lock)
    assert _calls(fake_isic) == 1
    assert sorted(p.name for p in outdir.glob("*.jpg")) == ["ISIC_0000001.jpg", "ISIC_0000002.jpg"]
    # The archive now serves another ISIC_0000002.jpg than the one recorded.
    text = lock.read_text().replace(
        sha256_file(outdir / "ISIC_0000002.jpg")[0], hashlib.sha256(b"other").hexdigest()
    )
    lock.write_text(text)
    shutil.rmtree(outdir)
    with pytest.raises(ChecksumMismatchError, match="ISIC_0000002.jpg") as info:
        download_archive_melanomas(outdir, query=QUERY, limit=2, checksums=lock)
    shutil.rmtree(outdir, ignore_errors=True)  # what Snakemake does to a failed job's output
    kept = info.value.kept
    assert kept.read_bytes() == b"\xff\xd8ISIC_0000002"
    assert kept.is_relative_to(tmp_path / "resources" / "rejected" / "isic_archive_melanoma")
    assert str(kept) in str(info.value)
    cached = {p.name for p in (tmp_path / "resources" / "download_cache").rglob("*.jpg")}
    assert cached == {"ISIC_0000001.jpg"}


def test_melanomas_runner_fails_on_missing_jpg(fake_isic, lock, tmp_path, monkeypatch):
    """Check an isic-cli run that lists an image it did not write fails, naming the image."""
    monkeypatch.setenv("FAKE_ISIC_JPGS", "1")
    with pytest.raises(DownloadError, match=r"1 image\(s\) .* missing .*ISIC_0000002"):
        download_archive_melanomas(_melanoma_out(tmp_path), query=QUERY, limit=2, checksums=lock)
    assert read_checksums(lock) == {}


def test_melanomas_runner_fails_on_too_few_images(fake_isic, lock, tmp_path):
    """Check fewer images than the limit is an error, not a silent short dataset."""
    with pytest.raises(DownloadError, match="gave 2 image"):
        download_archive_melanomas(_melanoma_out(tmp_path), query=QUERY, limit=300, checksums=lock)


def test_melanomas_runner_reports_isic_exit_code(fake_isic, lock, tmp_path, monkeypatch):
    """Check a failing isic-cli is reported with its exit code."""
    monkeypatch.setenv("FAKE_ISIC_EXIT", "3")
    with pytest.raises(DownloadError, match="exit code 3"):
        download_archive_melanomas(_melanoma_out(tmp_path), query=QUERY, limit=2, checksums=lock)


# ----------------------------------------------------------------------------- verify


def test_verify_archives_writes_report_then_catches_corruption(server, lock, tmp_path):
    """Check verify_archives writes verified.json, then rejects a file changed afterwards."""
    dataset_dir = tmp_path / "resources" / "archives" / DATASET
    for name in layout(DATASET).files():
        content = {CSV: CSV_BYTES, META: META_BYTES, ZIP: _zip_bytes()}[name]
        server.files[f"/a/2019/{name}"] = content
        download_archive_file(
            DATASET, name, dataset_dir / name, checksums=lock, hosts=server.hosts, **FAST
        )
    paths = [dataset_dir / name for name in layout(DATASET).files()]
    report = verify_archives(DATASET, paths, dataset_dir / "verified.json", checksums=lock)
    assert [f["status"] for f in report["files"]] == ["verified"] * 3
    assert report["recorded"] == []
    assert json.loads((dataset_dir / "verified.json").read_text()) == report

    (dataset_dir / CSV).write_bytes(CSV_BYTES + b"ISIC_0000009,0,1,0,0,0,0,0,0,0\n")
    (dataset_dir / "verified.json").unlink()
    with pytest.raises(ChecksumMismatchError, match=CSV):
        verify_archives(DATASET, paths, dataset_dir / "verified.json", checksums=lock)
    assert not (dataset_dir / "verified.json").exists()
    assert not (dataset_dir / CSV).exists()
    rejected = tmp_path / "resources" / "rejected" / DATASET
    assert len(list(rejected.glob(f"{CSV}.rejected-*"))) == 1


def test_verify_archives_melanoma_folder(fake_isic, lock, tmp_path):
    """Check the melanoma folder is verified file by file, and a missing image is caught."""
    dataset_dir = _melanoma_out(tmp_path).parent
    download_archive_melanomas(dataset_dir / "images", query=QUERY, limit=2, checksums=lock)
    report = verify_archives(
        "isic_archive_melanoma",
        [dataset_dir / "images"],
        dataset_dir / "verified.json",
        checksums=lock,
    )
    assert len(report["files"]) == 3  # metadata.csv + 2 jpgs, not attribution.txt
    (dataset_dir / "images" / "ISIC_0000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="ISIC_0000002.jpg"):
        verify_archives(
            "isic_archive_melanoma",
            [dataset_dir / "images"],
            dataset_dir / "verified.json",
            checksums=lock,
        )


def test_concurrent_records_are_all_kept(tmp_path):
    """Check parallel jobs recording new entries do not lose each other's rows (flock)."""
    lock = tmp_path / "lock.tsv"
    names = [f"file{i}.csv" for i in range(12)]
    for name in names:
        (tmp_path / name).write_text(name)

    def record(name):
        path = tmp_path / name
        sha, size = sha256_file(path)
        download._accept(
            DATASET,
            name,
            path,
            path,
            sha=sha,
            size=size,
            checksums=lock,
            source="test",
            rejected_dir=tmp_path / "rejected",
        )

    threads = [threading.Thread(target=record, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(f for _, f in read_checksums(lock)) == sorted(names)


def test_lock_rejects_malformed_rows(tmp_path):
    """Check a malformed lock fails with the line number."""
    path = tmp_path / "lock.tsv"
    path.write_text("dataset\tfile\tsha256\tbytes\nisic2019\tx.zip\tnothex\t12\n")
    with pytest.raises(ValueError, match="line 2"):
        read_checksums(path)


# ----------------------------------------------------------------------------- workflow


def test_dry_run_lists_one_download_job_per_official_file(tmp_path):
    """Check `snakemake -n` with data.source: isic plans one download per official file."""
    root = Path(__file__).parents[1]
    # Work in tmp_path (nothing is written in the repository); config/ holds inputs (paper values).
    (tmp_path / "config").symlink_to(root / "config")
    (tmp_path / "isic.yaml").write_text("data:\n  source: isic\n")
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "snakemake"),
            "--dry-run",
            "--workflow-profile",
            "none",
            "--snakefile",
            str(root / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(root / "config" / "config.yaml"),
            str(tmp_path / "isic.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    planned = re.findall(r"rule download_archive_file:\n\s+output: (\S+)", result.stdout)
    expected = {
        f"resources/archives/{d}/{name}"
        for d in DATASETS
        if not layout(d).folder
        for name in layout(d).files()
    }
    assert sorted(planned) == sorted(expected)
    assert len(re.findall(r"rule download_archive_melanomas:", result.stdout)) == 1
    assert len(re.findall(r"rule verify_archives:", result.stdout)) == 6


def test_lock_survives_a_write_that_fails(tmp_path, monkeypatch):
    """Check a write of the lock cut short (killed job, full disk) leaves the old lock intact,
    not an empty file read next time as "no entries" (issue 21.2)."""
    lock = tmp_path / "lock.tsv"
    good = f"dataset\tfile\tsha256\tbytes\n{DATASET}\told.csv\t{'a' * 64}\t3\n"
    lock.write_text(good)
    path = tmp_path / "new.csv"
    path.write_text("new")
    sha, size = sha256_file(path)

    def disk_full(entries):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(download, "_format_checksums", disk_full)
    with pytest.raises(OSError, match="No space"):
        download._accept(
            DATASET,
            "new.csv",
            path,
            path,
            sha=sha,
            size=size,
            checksums=lock,
            source="test",
            rejected_dir=tmp_path / "rejected",
        )
    assert lock.read_text() == good


@pytest.mark.parametrize(
    "text", ["", "\n", "# a comment only\n"], ids=["empty", "blank", "comment"]
)
def test_emptied_lock_is_an_error(tmp_path, text):
    """Check a lock that shrank to nothing is refused, by readers and by writers."""
    lock = tmp_path / "lock.tsv"
    lock.write_text(text)
    with pytest.raises(ValueError, match="empty .*truncated"):
        read_checksums(lock)
    path = tmp_path / "x.csv"
    path.write_text("x")
    sha, size = sha256_file(path)
    with pytest.raises(ValueError, match="truncated"):
        download._accept(
            DATASET,
            "x.csv",
            path,
            path,
            sha=sha,
            size=size,
            checksums=lock,
            source="test",
            rejected_dir=tmp_path / "rejected",
        )
    assert lock.read_text() == text


# ----------------------------------------------------------------------------- content checks


def test_truncated_zip_in_archive_dir_is_not_recorded(lock, tmp_path):
    """Check link_archive_file checks the zip as a download does: a truncated archive in
    data.archive_dir is refused, not recorded as the official hash (issue 21.3)."""
    (tmp_path / ZIP).write_bytes(_zip_bytes()[:-300])
    out = _out(tmp_path)
    with pytest.raises(DownloadError, match="not a readable zip"):
        link_archive_file(DATASET, ZIP, out, archive_dir=tmp_path, checksums=lock)
    assert read_checksums(lock) == {}
    assert not out.exists()
    assert (tmp_path / ZIP).stat().st_size == len(_zip_bytes()) - 300  # the user's file stays


def test_zip_without_the_official_folder_is_not_recorded(lock, tmp_path):
    """Check a readable zip that lacks the official folder is refused."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("something_else/ISIC_0000000.jpg", b"x")
    (tmp_path / ZIP).write_bytes(buffer.getvalue())
    with pytest.raises(DownloadError, match="official folder 'ISIC_2019_Training_Input/'"):
        link_archive_file(DATASET, ZIP, _out(tmp_path), archive_dir=tmp_path, checksums=lock)
    assert read_checksums(lock) == {}


def test_csv_answered_with_html_is_not_recorded(server, lock, tmp_path):
    """Check an HTML page served with HTTP 200 in place of a CSV is refused (issue 21.3)."""
    for mirror in "ab":
        server.files[f"/{mirror}/2019/{CSV}"] = b"<!DOCTYPE html><html><body>Sign in</body></html>"
    out = _out(tmp_path, CSV)
    with pytest.raises(DownloadError, match="HTML"):
        download_archive_file(
            DATASET, CSV, out, checksums=lock, hosts=server.hosts, dataverse_api=None, **FAST
        )
    assert read_checksums(lock) == {}
    assert not out.exists()


def test_csv_cut_without_content_length_is_not_recorded(server, lock, tmp_path):
    """Check a CSV cut mid-row by a server that sent no Content-Length is refused."""
    server.sticky[f"/a/2019/{CSV}"] = "nolength"
    server.sticky[f"/b/2019/{CSV}"] = "nolength"
    out = _out(tmp_path, CSV)
    with pytest.raises(DownloadError, match="line 2: .*cut short"):
        download_archive_file(
            DATASET, CSV, out, checksums=lock, hosts=server.hosts, dataverse_api=None, **FAST
        )
    assert read_checksums(lock) == {}


def test_csv_with_wrong_header_in_archive_dir_is_not_recorded(lock, tmp_path):
    """Check a CSV whose header is not the layout's is refused when linked."""
    (tmp_path / META).write_bytes(CSV_BYTES)
    with pytest.raises(DownloadError, match="lacks the column"):
        link_archive_file(DATASET, META, _out(tmp_path, META), archive_dir=tmp_path, checksums=lock)
    assert read_checksums(lock) == {}


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_synthetic_twin_passes_the_content_checks(tiny_archives, dataset):
    """Check every file laid out like the official one passes check_official_file."""
    root = tiny_archives / dataset
    if layout(dataset).folder:
        files = [f"images/{p.name}" for p in sorted((root / "images").iterdir())]
    else:
        files = layout(dataset).files()
    for name in files:
        download.check_official_file(dataset, name, root / name)


# ----------------------------------------------------------------------------- provenance


def test_verified_json_and_link_records_have_no_local_absolute_paths(lock, tmp_path):
    """Check verified.json names the lock by a project-relative path or its name, and a linked
    file's source by its place in archive_dir, not the user's absolute path (issue 21.9)."""
    archive_dir = tmp_path / "mine"
    (archive_dir / DATASET).mkdir(parents=True)
    dataset_dir = tmp_path / "resources" / "archives" / DATASET
    content = {CSV: CSV_BYTES, META: META_BYTES, ZIP: _zip_bytes()}
    for name in layout(DATASET).files():
        (archive_dir / DATASET / name).write_bytes(content[name])
        link_archive_file(
            DATASET, name, dataset_dir / name, archive_dir=archive_dir, checksums=lock
        )
    paths = [dataset_dir / name for name in layout(DATASET).files()]
    verify_archives(DATASET, paths, dataset_dir / "verified.json", checksums=lock)
    text = (dataset_dir / "verified.json").read_text()
    assert str(tmp_path) not in text
    assert json.loads(text)["checksums"] == "archive_checksums.tsv"


def test_redirect_from_https_to_http_is_refused():
    """Check a redirect that downgrades https to cleartext http is refused (issue 21.9)."""
    handler = download._NoDowngradeRedirect()
    request = urllib.request.Request("https://isic-archive.s3.amazonaws.com/a.zip")
    with pytest.raises(urllib.error.HTTPError, match="refused redirect from https to http"):
        handler.redirect_request(request, None, 302, "Found", {}, "http://evil.example/a.zip")
    follow = handler.redirect_request(request, None, 302, "Found", {}, "https://mirror/a.zip")
    assert follow.full_url == "https://mirror/a.zip"
