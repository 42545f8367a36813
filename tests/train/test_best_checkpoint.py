"""checkpoints/best.pt: written when the chosen metric improves, never pruned, kept across a
resume, and what `--checkpoint best` names."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.train_helpers import TinyDataset, gan_config

from fastgen.checkpoint_io import checkpoint_file, list_checkpoints, load_checkpoint
from fastgen.train import train_gan
from fastgen.train.best import BestSoFar
from fastgen.train.run_folder import RunFolder

FIDS = {1: 5.0, 2: 3.0, 3: 4.0, 4: 2.0, 5: 2.5, 6: 1.0}  # the scripted FID of each step


def scripted(step, models):
    return {"fid": FIDS[step], "kid": 0.1}


scripted.extractor = "scripted"


@pytest.fixture
def best_writes(monkeypatch):
    steps = []
    write = RunFolder.write_best

    def counted(self, step, state, last):
        steps.append(step)
        return write(self, step, state, last)

    monkeypatch.setattr(RunFolder, "write_best", counted)
    return steps


def test_best_is_written_on_improvement_only_never_pruned_and_survives_resume(
    tmp_path, best_writes
):
    data = TinyDataset()
    config = gan_config(tmp_path, steps=4, eval_every=1, checkpoint_every=2, keep_checkpoints=1)
    result = train_gan(config, data, evaluator=scripted, progress=False)
    run = tmp_path / "gan"
    best = run / "checkpoints" / "best.pt"
    assert best_writes == [1, 2, 4]
    assert result["best"] == {"metric": "fid", "step": 4, "value": 2.0, "checkpoint": str(best)}
    state = load_checkpoint(best)  # a whole, checksummed checkpoint of its step
    assert state["step"] == 4 and state["best"] == {"metric": "fid", "step": 4, "value": 2.0}
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["ckpt_000004.pt"]

    # resumed: step 5's 2.5 beats nothing the run saw before the resume; step 6's 1.0 does
    best_writes.clear()
    config = gan_config(tmp_path, steps=6, eval_every=1, checkpoint_every=2, keep_checkpoints=1)
    resumed = train_gan(
        config, data, evaluator=scripted, progress=False,
        resume=str(run / "checkpoints" / "ckpt_000004.pt"),
    )  # fmt: skip
    assert best_writes == [6] and resumed["best"]["step"] == 6
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["ckpt_000006.pt"]
    assert best.is_file() and load_checkpoint(best)["step"] == 6
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    evals = [row for row in rows if "eval" in row]
    assert [row["step"] for row in evals] == [1, 2, 3, 4, 5, 6]
    assert all(row["eval_time_s"] >= 0 and row["train_time_s"] >= 0 for row in evals)

    # the commands read it with --checkpoint best
    from fastgen.cli import main

    grid, exported = tmp_path / "best.png", tmp_path / "best_g.pt"
    assert main(["sample", str(run), "--checkpoint", "best", "--n", "4", "--out", str(grid)]) == 0
    assert main(["export", str(run), "--checkpoint", "best", "--out", str(exported),
                 "--format", "state_dict"]) == 0  # fmt: skip
    assert grid.is_file() and exported.is_file()


def test_best_of_a_higher_is_better_metric_and_non_finite_values():
    best = BestSoFar("precision")
    assert not best.improves({"fid": 1.0}) and not best.improves({"precision": float("nan")})
    assert best.improves({"precision": 0.5})
    best.record(3, {"precision": 0.5})
    assert not best.improves({"precision": 0.4}) and best.improves({"precision": 0.6})
    assert best.summary() == "precision 0.5 at step 3"
    with pytest.raises(ValueError, match="expected"):
        BestSoFar("fid").load_state_dict({"metric": "kid", "step": 1, "value": 1.0})


def test_checkpoint_best_names_best_pt(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="--checkpoint best: .* no checkpoints/best.pt"):
        checkpoint_file(run, "best")
    torch.save({}, run / "checkpoints" / "best.pt")
    assert checkpoint_file(run, "best") == str(run / "checkpoints" / "best.pt")
    with pytest.raises(ValueError, match="--checkpoint best expected a run folder"):
        checkpoint_file(run / "checkpoints" / "best.pt", "best")


def test_best_metric_must_be_evaluated(tmp_path, capsys):
    from fastgen.cli import main

    argv = ["train", "dcgan", "--out", str(tmp_path / "r"), "--eval-every", "2",
            "--eval-metrics", "kid", "--steps", "2", "--quiet"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--best-metric fid (the default) is not among --eval-metrics kid" in err
