"""The pinned isic_id list of the extra archive melanomas (issue 22.1): download exactly those ids,
refuse any other set at ingest, refresh the list from the search. isic-cli is faked (no network):
a small archive of 400 melanoma ids that answers ``isic_id:`` searches with those ids and any
other search with its first ``--limit`` ids, in order."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import put_on_path

from melrepro.data.archive_io import IngestError
from melrepro.data.download import download_archive_melanomas, read_checksums
from melrepro.data.manifests import check_images, ingest_dataset
from melrepro.data.pinned_ids import (
    DEFAULT_IDS_FILE,
    REFRESH_COMMAND,
    PinnedIdsError,
    id_queries,
    pinned_ids_for_run,
    pinned_ids_text,
    read_pinned_ids,
)

ROOT = Path(__file__).parents[1]
QUERY = 'diagnosis_3:"Melanoma Invasive" OR diagnosis_3:"Melanoma in situ"'
#: The fake archive's melanomas, in the order its search lists them (not sorted).
ARCHIVE = [f"ISIC_{(7919 * k) % 1_000_000:07d}" for k in range(1, 401)]

FAKE_ISIC = """#!{python}
import csv, json, os, re, sys
from pathlib import Path
args = sys.argv[1:]
if args == ["--version"]:
    print("isic, version 99.0-fake")
    sys.exit(0)
with open(os.environ["FAKE_ISIC_CALLS"], "a") as calls:
    calls.write(json.dumps(args) + "\\n")
archive = json.loads(os.environ["FAKE_ISIC_ARCHIVE"])
search = args[args.index("--search") + 1]
limit = int(args[args.index("--limit") + 1])
asked = re.findall(r"isic_id:(ISIC_\\d{{7}})", search)
hidden = set(os.environ.get("FAKE_ISIC_HIDDEN", "").split())
ids = [i for i in (asked or archive) if i in archive and i not in hidden][:limit]
rows = [{{"isic_id": i, "diagnosis_3": "Melanoma Invasive", "copyright_license": "CC-BY"}} for i in ids]
if args[:2] == ["metadata", "download"]:
    out = open(args[args.index("--outfile") + 1], "w", newline="")
else:
    folder = Path(args[-1])
    folder.mkdir(parents=True, exist_ok=True)
    for i in ids:
        (folder / f"{{i}}.jpg").write_bytes(b"\\xff\\xd8" + i.encode())
    (folder / "attribution.txt").write_text("Anonymous")
    (folder / "licenses").mkdir(exist_ok=True)
    (folder / "licenses" / "CC-BY.txt").write_text("licence")
    out = (folder / "metadata.csv").open("w", newline="")
writer = csv.DictWriter(out, ["isic_id", "diagnosis_3", "copyright_license"])
writer.writeheader()
writer.writerows(rows)
"""


@pytest.fixture
def fake_isic(tmp_path, monkeypatch):
    """A fake `isic` on PATH; returns the file listing its calls (one JSON argv a line)."""
    put_on_path(tmp_path, monkeypatch, "isic", FAKE_ISIC.format(python=sys.executable))
    monkeypatch.setenv("FAKE_ISIC_ARCHIVE", json.dumps(ARCHIVE))
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_ISIC_CALLS", str(calls))
    return calls


def _calls(calls: Path) -> list[list[str]]:
    return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def _outdir(tmp_path: Path) -> Path:
    return tmp_path / "resources" / "archives" / "isic_archive_melanoma" / "images"


def _lock(tmp_path: Path) -> Path:
    lock = tmp_path / "lock.tsv"
    lock.write_text("dataset\tfile\tsha256\tbytes\n")
    return lock


def test_pinned_download_fetches_exactly_the_ids_in_batches(fake_isic, tmp_path):
    """Check 120 pinned ids (not the archive's first ones) are fetched by three isic_id searches
    of at most 50 ids, merged into one folder in pinned order, and reused from the cache."""
    pinned = ARCHIVE[150:270][::-1]
    outdir, lock = _outdir(tmp_path), _lock(tmp_path)
    download_archive_melanomas(outdir, query=QUERY, limit=120, checksums=lock, pinned_ids=pinned)
    searches = [c[c.index("--search") + 1] for c in _calls(fake_isic)]
    assert [len(re.findall("isic_id:", s)) for s in searches] == [50, 50, 20]
    assert [i for s in searches for i in re.findall(r"ISIC_\d{7}", s)] == pinned
    assert sorted(p.stem for p in outdir.glob("*.jpg")) == sorted(pinned)
    metadata = (outdir / "metadata.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in metadata[1:]] == pinned
    recorded = {f for d, f in read_checksums(lock) if d == "isic_archive_melanoma"}
    assert recorded == {"images/metadata.csv"} | {f"images/{i}.jpg" for i in pinned}
    # A rerun (Snakemake deleted the output) reuses the merged download cache.
    shutil.rmtree(outdir)
    download_archive_melanomas(outdir, query=QUERY, limit=120, checksums=lock, pinned_ids=pinned)
    assert len(_calls(fake_isic)) == 3


def test_pinned_download_names_the_missing_ids(fake_isic, tmp_path, monkeypatch):
    """Check an archive that no longer serves a pinned image fails, naming that id."""
    pinned = ARCHIVE[:60]
    monkeypatch.setenv("FAKE_ISIC_HIDDEN", f"{pinned[7]} {pinned[55]}")
    with pytest.raises(PinnedIdsError, match=rf"1 pinned id\(s\) missing: {pinned[7]}$"):
        download_archive_melanomas(
            _outdir(tmp_path), query=QUERY, limit=60, checksums=_lock(tmp_path), pinned_ids=pinned
        )


def test_linked_folder_with_other_ids_is_refused(fake_isic, tmp_path):
    """Check a user's folder (archive_dir) holding another set than the pinned one is refused,
    naming the missing and the extra ids."""
    archive_dir = tmp_path / "mine"
    folder = archive_dir / "isic_archive_melanoma" / "images"
    subprocess.run(
        ["isic", "image", "download", "--search", QUERY, "--limit", "3", str(folder)], check=True
    )
    pinned = [ARCHIVE[0], ARCHIVE[1], ARCHIVE[5]]
    with pytest.raises(PinnedIdsError) as info:
        download_archive_melanomas(
            _outdir(tmp_path),
            query=QUERY,
            limit=3,
            checksums=_lock(tmp_path),
            archive_dir=archive_dir,
            pinned_ids=pinned,
        )
    assert f"missing: {ARCHIVE[5]}" in str(info.value)
    assert f"not in the pinned list: {ARCHIVE[2]}" in str(info.value)


def test_ingest_refuses_a_set_other_than_the_pinned_one(archive_copy, tmp_path):
    """Check ingest accepts the melanomas when they are the pinned ids and refuses them, naming
    the missing and the extra ids, when one differs."""
    root = archive_copy("isic_archive_melanoma")
    checks = tmp_path / "checks.parquet"
    check_images(root, "isic_archive_melanoma", 0, n_shards=1).to_parquet(checks)
    found = sorted(p.stem for p in (root / "images").glob("*.jpg"))
    out = tmp_path / "out"

    def ingest(pinned):
        return ingest_dataset(
            root,
            "isic_archive_melanoma",
            [checks],
            out / "manifest.parquet",
            out / "quarantine.csv",
            n_shards=1,
            pinned_ids=pinned,
        )

    assert sorted(ingest(found[::-1])["image_id"]) == found
    (out / "manifest.parquet").unlink()
    other = [*found[1:], "ISIC_9999999"]
    with pytest.raises(IngestError) as info:
        ingest(other)
    assert "missing: ISIC_9999999" in str(info.value)
    assert f"not in the pinned list: {found[0]}" in str(info.value)
    assert not (out / "manifest.parquet").exists()


def test_empty_list_stops_a_real_run_unless_accepted(tmp_path):
    """Check the shipped (empty) list stops a real run with the refresh command in the message,
    and accept_unpinned lets the search decide (None); a list of the wrong length is refused."""
    shipped = ROOT / DEFAULT_IDS_FILE
    assert read_pinned_ids(shipped) == []
    with pytest.raises(PinnedIdsError) as info:
        pinned_ids_for_run(shipped, limit=300, accept_unpinned=False)
    assert REFRESH_COMMAND in str(info.value)
    assert "accept_unpinned: true" in str(info.value)
    assert pinned_ids_for_run(shipped, limit=300, accept_unpinned=True) is None
    short = tmp_path / "ids.txt"
    short.write_text("# header\n" + "\n".join(ARCHIVE[:3]) + "\n")
    with pytest.raises(PinnedIdsError, match="pins 3 id"):
        pinned_ids_for_run(short, limit=300, accept_unpinned=True)
    assert pinned_ids_for_run(short, limit=3, accept_unpinned=False) == ARCHIVE[:3]


def test_shipped_list_and_config_agree():
    """Check config/isic.yaml points at the shipped list, whose header says the query of
    isic.yaml, and a real run does not accept an unpinned set by default."""
    settings = yaml.safe_load((ROOT / "config" / "isic.yaml").read_text())["data"]
    melanomas = settings["archive_melanomas"]
    assert melanomas["ids"] == DEFAULT_IDS_FILE
    assert melanomas["accept_unpinned"] is False
    header = (ROOT / DEFAULT_IDS_FILE).read_text()
    assert f"# query: {melanomas['query']}\n" in header
    assert f"# limit: {melanomas['limit']}\n" in header


@pytest.mark.parametrize("line", ["ISIC_123", "../etc/passwd", "ISIC_0000001 ISIC_0000002"])
def test_malformed_list_is_refused(tmp_path, line):
    """Check a line that is not one ISIC id, or a repeated id, is refused with its line number."""
    path = tmp_path / "ids.txt"
    path.write_text(f"# header\nISIC_0000001\n{line}\n")
    with pytest.raises(PinnedIdsError, match="line 3"):
        read_pinned_ids(path)
    path.write_text("ISIC_0000001\nISIC_0000001\n")
    with pytest.raises(PinnedIdsError, match="line 2: ISIC_0000001 is listed twice"):
        read_pinned_ids(path)


def test_refresh_writes_the_search_with_provenance(fake_isic, tmp_path):
    """Check the refresh command runs the config's search with isic-cli and writes its first
    `limit` ids in order, with date, query, limit and the isic-cli version; the file reads back."""
    out = tmp_path / "ids.txt"
    command = ["-m", "melrepro.data.refresh_archive_melanoma_ids", "--out", str(out)]
    config = ["--config", str(ROOT / "config/isic.yaml")]
    result = subprocess.run(
        [sys.executable, *command, *config], capture_output=True, text=True, check=True
    )
    assert f"wrote 300 pinned ids to {out}" in result.stdout
    (call,) = _calls(fake_isic)
    assert call[:6] == ["metadata", "download", "--search", QUERY, "--limit", "300"]
    assert read_pinned_ids(out) == ARCHIVE[:300]
    text = out.read_text()
    assert re.search(r"^# date: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", text, re.M)
    assert f"# query: {QUERY}\n" in text
    assert "# limit: 300\n" in text
    assert "# isic-cli: isic, version 99.0-fake\n" in text
    assert pinned_ids_for_run(out, limit=300, accept_unpinned=False) == ARCHIVE[:300]


def test_id_queries_and_text_round_trip(tmp_path):
    """Check the batches cover the list once, in order, and the file text reads back."""
    batches = id_queries(ARCHIVE[:101], batch_size=50)
    assert [len(b) for b, _ in batches] == [50, 50, 1]
    assert batches[2][1] == f"isic_id:{ARCHIVE[100]}"
    path = tmp_path / "ids.txt"
    path.write_text(
        pinned_ids_text(ARCHIVE[:5], query=QUERY, limit=5, isic_version="v", date="d", command="c")
    )
    assert read_pinned_ids(path) == ARCHIVE[:5]


def test_real_run_with_the_empty_list_stops_at_the_download(fake_isic, tmp_path):
    """Check `snakemake` of the archive melanomas with data.source isic and the shipped empty list
    fails in download_archive_melanomas, whose log says to run the refresh command; isic-cli is
    never called."""
    (tmp_path / "real.yaml").write_text("data:\n  source: isic\n")
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "snakemake"),
            "--cores",
            "1",
            "--workflow-profile",
            "none",
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(ROOT / "config" / "config.yaml"),
            str(tmp_path / "real.yaml"),
            "--",
            "resources/archives/isic_archive_melanoma/images",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env=os.environ | {"PYTHONPATH": str(ROOT / "src")},
    )
    assert result.returncode != 0
    log = tmp_path / "logs" / "download_archive_melanomas" / "isic_archive_melanoma.log"
    assert REFRESH_COMMAND in log.read_text(), result.stdout[-2000:] + result.stderr[-2000:]
    assert _calls(fake_isic) == []
