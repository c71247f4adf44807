"""Same numbers at any core count (issue 20): a job computes with its config's threads."""

import json
import logging
import runpy
from pathlib import Path

import pytest
import torch
from snakemake.iocontainers import Namedlist
from test_effnet_ham import RECIPE, RUN_INFO, task3  # noqa: F401  (task3 is a fixture)

from melrepro.methods.threads import job_threads

ROOT = Path(__file__).parents[1]


def test_job_threads_takes_the_config_not_the_grant(caplog):
    """Check the declared count wins, a smaller grant is logged, a bad config value is refused."""
    with caplog.at_level(logging.WARNING, logger="melrepro.methods.threads"):
        assert job_threads(2, 2) == 2
        assert caplog.records == []
        assert job_threads(2, 1) == 2
    assert "granted 1 thread(s); computing with the config's 2" in caplog.text
    assert job_threads(3) == 3
    for bad in (0, -1, True, "2", 1.5):
        with pytest.raises(ValueError, match="positive integer"):
            job_threads(bad, 1)


def _run_train_script(task3, out: Path, monkeypatch, *, granted: int, declared: int) -> dict:  # noqa: F811
    """Run scripts/train_effnet_ham.py as Snakemake would, with ``granted`` cores (its log goes
    to a handler on the ``melrepro`` logger, not the process's root logger and stderr)."""
    root, shards = task3
    handlers = []

    def log_to_test_file(path):
        handlers.append(logging.FileHandler(path, encoding="utf-8"))
        logging.getLogger("melrepro").addHandler(handlers[-1])

    monkeypatch.setattr("melrepro.report.logs.log_to_file", log_to_test_file)
    out.mkdir(parents=True)
    job = type("Job", (), {})()
    job.input = Namedlist(
        fromdict={
            "manifest": str(root / "manifest.parquet"),
            "split": str(root / "split.parquet"),
            "cache": [str(s) for s in shards],
        }
    )
    job.output = Namedlist(
        fromdict={
            name: str(out / file)
            for name, file in [
                ("model", "model.pt"),
                ("history", "history.csv"),
                ("predictions", "predictions.parquet"),
                ("metrics", "metrics.json"),
            ]
        }
    )
    job.params = Namedlist(
        fromdict={
            "recipe": RECIPE,
            "overrides": {"epochs": 1},
            "malignant_labels": ["MEL", "BCC", "AKIEC"],
            "label_shuffled": False,
            "checkpoint_dir": str(out / "checkpoints"),
            "loader_workers": 0,
            "augment_on": "auto",
            "n_bootstrap": 10,
            "run_info": RUN_INFO,
        }
    )
    job.wildcards = Namedlist(fromdict={"variant": "baseline2"})
    job.log = Namedlist([str(out / "train.log")])
    job.resources = Namedlist(fromdict={"gpu": 0})
    job.threads = granted
    job.config = {"effnet_ham": {"threads": declared}}
    before = torch.get_num_threads()
    try:
        runpy.run_path(str(ROOT / "scripts" / "train_effnet_ham.py"), {"snakemake": job})
    finally:
        torch.set_num_threads(before)
        for handler in handlers:
            logging.getLogger("melrepro").removeHandler(handler)
            handler.close()
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    return state.get("model", state)


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_gives_the_same_weights_with_one_or_two_cores(task3, tmp_path, monkeypatch):  # noqa: F811
    """Check the training rule's script gives identical weights when the scheduler grants 1 or
    2 cores (config: 2 threads), and records the threads it computed with."""
    one = _run_train_script(task3, tmp_path / "one", monkeypatch, granted=1, declared=2)
    two = _run_train_script(task3, tmp_path / "two", monkeypatch, granted=2, declared=2)
    assert _same_weights(one, two)
    for run in ("one", "two"):
        metrics = json.loads((tmp_path / run / "metrics.json").read_text())
        run_info = json.loads((tmp_path / run / "run_info.json").read_text())
        assert metrics["torch_threads"] == run_info["torch_threads"] == 2
    assert "granted 1 thread(s)" in (tmp_path / "one" / "train.log").read_text()


def test_thread_count_moves_the_weights(task3, tmp_path, monkeypatch):  # noqa: F811
    """Control: the same training with 1 and with 2 torch threads gives other weights, so the
    test above would catch a script that took its threads from the grant."""
    one = _run_train_script(task3, tmp_path / "one", monkeypatch, granted=1, declared=1)
    two = _run_train_script(task3, tmp_path / "two", monkeypatch, granted=2, declared=2)
    assert not _same_weights(one, two)
