"""`fastgen eval` end to end on tiny checkpoints, and the training-time evaluator."""

from __future__ import annotations

import json

import pytest
import torch

from fastgen import cli, data, train
from fastgen.metrics.cli import make_evaluator
from fastgen.train.checkpoint import latest_checkpoint

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
    # The table and the JSON say what the numbers were measured with, and KID's scale.
    assert "extractor" in printed and "digits (fastgen's digits classifier" in printed
    assert metrics["extractor"].startswith("digits (") and "not comparable" in metrics["extractor"]
    assert f"{metrics['kid'] * 1e3:.6g} x 10^-3" in printed
    assert report["settings"]["quantize"] is True
    assert report["settings"]["kid_subset_size"] == metrics["kid_subset_size"] == 100


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
    assert cli.main(["eval", str(ckpt), "--extractor", "inception", "--n", "30"]) == 2
    err = capsys.readouterr().err
    assert "never downloads" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["eval", str(ckpt), "--metrics", "nll"]) == 2
    assert "needs a VAE checkpoint" in capsys.readouterr().err


def test_eval_records_the_kid_subset_size_it_used_and_a_too_small_n(tmp_path, digits16, capsys):
    ckpt = _gan_checkpoint(tmp_path, digits16)
    out = tmp_path / "eval.json"
    argv = ["eval", str(ckpt), "--metrics", "kid", "--n", "50", "--kid-subsets", "3",
            "--out", str(out)]  # fmt: skip
    with pytest.warns(UserWarning, match="subsets of 50 rows, fewer than the requested"):
        assert cli.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["metrics"]["kid_subset_size"] == 50
    assert report["settings"]["kid_subset_size"] == 50
    assert report["settings"]["kid_subset_size_requested"] == 1000
    capsys.readouterr()
    assert cli.main(["eval", str(ckpt), "--metrics", "fid,is", "--n", "15"]) == 2
    err = capsys.readouterr().err
    assert "--n must be at least 20 samples for the Inception Score" in err and "drop 'is'" in err


@pytest.fixture(scope="module")
def photos16():
    return data.load_dataset("photos", resolution=16, split="train")


def test_digits_extractor_is_refused_on_rgb_photos(tmp_path, photos16, capsys):
    ckpt = _gan_checkpoint(tmp_path, photos16, data="photos")
    assert cli.main(["eval", str(ckpt), "--metrics", "fid", "--n", "30"]) == 2
    err = capsys.readouterr().err
    assert "the digits extractor is a classifier of single-channel handwritten digits" in err
    assert "images of 'photos' have 3 channels" in err and "--extractor inception" in err
    with pytest.raises(
        ValueError, match="images of 'photos' have 3 channels.*--eval-extractor inception"
    ):
        make_evaluator(dataset=photos16, metrics="fid", n=30)
    # fastgen train --eval-every refuses before it trains
    out = tmp_path / "refused"
    argv = ["train", "dcgan", "--data", "photos", "--resolution", "16", "--steps", "2",
            "--eval-every", "1", "--out", str(out), "--quiet"]  # fmt: skip
    assert cli.main(argv) == 2
    assert "--eval-extractor inception" in capsys.readouterr().err
    assert not (out / "checkpoints").exists()


def test_digits_extractor_warns_on_other_single_channel_data(digits16):
    other = data.ImageDataset(digits16.images, name="/data/faces")
    with pytest.warns(UserWarning, match="trained on fastgen's 'digits' only; on '/data/faces'"):
        make_evaluator(dataset=other, metrics="fid", n=30)


def test_training_logs_the_evaluator(tmp_path, digits16):
    config = train.GANConfig(steps=4, eval_every=2, out_dir=str(tmp_path / "gan"), **TINY)
    evaluator = make_evaluator(dataset=digits16, metrics="fid,kid,coverage", n=64, config=config,
                               kid_subsets=3, kid_subset_size=32)  # fmt: skip
    train.train_gan(config, digits16, evaluator=evaluator, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "gan" / "log.jsonl").read_text().splitlines()]
    text = json.dumps(rows)
    assert "fid" in text and "modes_covered" in text
    evaluated = [row for row in rows if "eval" in row]
    assert evaluated and all(row["extractor"].startswith("digits (") for row in evaluated)
    with pytest.raises(ValueError, match="make_evaluator: metrics expected names"):
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
