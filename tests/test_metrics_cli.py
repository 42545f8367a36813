"""`fastgen eval` end to end on tiny checkpoints, and the training-time evaluator."""

from __future__ import annotations

import json

import pytest
import torch

train = pytest.importorskip("fastgen.train")
data = pytest.importorskip("fastgen.data")
cli = pytest.importorskip("fastgen.cli")

from fastgen.metrics.cli import make_evaluator  # noqa: E402
from fastgen.train.checkpoint import latest_checkpoint  # noqa: E402

# Stock layers (fused=False) keep these tests independent of which native ops have landed;
# the metrics code does not care which layers the generator is built from.
TINY = dict(resolution=16, batch_size=16, width=8, latent_dim=8, fused=False, device="cpu",
            sample_every=0, checkpoint_every=0, log_every=1, num_samples=16)  # fmt: skip


@pytest.fixture(scope="module")
def digits16():
    return data.load_dataset("digits", resolution=16, split="train")


def _gan_checkpoint(tmp_path, dataset, **extra):
    config = train.GANConfig(steps=3, out_dir=str(tmp_path / "gan"), **TINY, **extra)
    train.train_gan(config, dataset, progress=False)
    return latest_checkpoint(config.out_dir)


def test_eval_gan_checkpoint_writes_json_and_table(tmp_path, digits16, capsys):
    ckpt = _gan_checkpoint(tmp_path, digits16)
    out = tmp_path / "eval.json"
    argv = ["eval", str(ckpt), "--metrics", "fid,kid,is,pr,coverage", "--n", "300",
            "--kid-subsets", "5", "--kid-subset-size", "100", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    metrics = report["metrics"]
    assert {"fid", "kid", "kid_std_error", "is", "precision", "recall", "modes_covered"} <= set(
        metrics
    )
    assert metrics["fid"] > 0 and 1 <= metrics["is"] <= 10
    assert report["settings"]["n"] == 300 and report["settings"]["extractor"] == "digits"
    assert report["settings"]["real_images"] == len(digits16)
    assert len(report["checkpoint_hash"]) >= 8
    assert "fid" in printed and str(out) in printed


def test_eval_vae_checkpoint_reports_likelihood_bounds(tmp_path):
    dataset = data.load_dataset("digits", resolution=16, split="train")
    tiny = {k: v for k, v in TINY.items() if k != "num_samples"}
    config = train.VAEConfig(steps=3, out_dir=str(tmp_path / "vae"), **tiny)
    train.train_vae(config, dataset, progress=False)
    ckpt = latest_checkpoint(config.out_dir)
    out = tmp_path / "vae.json"
    argv = [
        "eval",
        str(ckpt),
        "--metrics",
        "fid,nll",
        "--n",
        "100",
        "--iw-samples",
        "4",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["nll_iw"] <= metrics["nll_elbo"] + 1e-6
    assert metrics["bits_per_dim_iw"] > 0 and metrics["vae_k"] == 4 and metrics["fid"] > 0


def test_eval_errors_are_one_line(tmp_path, digits16, capsys, monkeypatch):
    ckpt = _gan_checkpoint(tmp_path, digits16)
    assert cli.main(["eval", str(ckpt), "--metrics", "fid,bogus"]) == 2
    assert "--metrics expected names" in capsys.readouterr().err
    monkeypatch.delenv("FASTGEN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr("fastgen.metrics.inception.DEFAULT_PATH", tmp_path / "none.pth")
    assert cli.main(["eval", str(ckpt), "--extractor", "inception", "--n", "10"]) == 2
    err = capsys.readouterr().err
    assert "never downloads" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["eval", str(ckpt), "--metrics", "nll"]) == 2
    assert "needs a VAE checkpoint" in capsys.readouterr().err


def test_training_logs_the_evaluator(tmp_path, digits16):
    config = train.GANConfig(steps=4, eval_every=2, out_dir=str(tmp_path / "gan"), **TINY)
    evaluator = make_evaluator(dataset=digits16, metrics="fid,kid,coverage", n=64, config=config,
                               kid_subsets=3, kid_subset_size=32)  # fmt: skip
    train.train_gan(config, digits16, evaluator=evaluator, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "gan" / "log.jsonl").read_text().splitlines()]
    text = json.dumps(rows)
    assert "fid" in text and "modes_covered" in text
    with pytest.raises(ValueError, match="--metrics expected names"):
        make_evaluator(dataset=digits16, metrics="fid,nope", n=10)


def test_conditional_generator_is_asked_for_every_class(tmp_path, digits16):
    from fastgen.metrics.cli import generator_sampler
    from fastgen.train.checkpoint import load_models

    ckpt = _gan_checkpoint(tmp_path, digits16, conditional=True)
    _, models = load_models(ckpt)
    seen = []
    ema = models["ema"]
    original = ema.forward
    ema.forward = lambda z, labels=None: seen.append(labels) or original(z, labels)
    sample = generator_sampler(ema, device=torch.device("cpu"))
    sample(7)
    sample(13)
    assert torch.cat(seen).tolist() == [i % 10 for i in range(20)]
