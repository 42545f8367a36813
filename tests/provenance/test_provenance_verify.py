"""fastgen.provenance.verify and regenerate, and `fastgen verify`: regeneration reproduces an
image from the true checkpoint and rejects another; stripped metadata is "no provenance"
(issue 26, items 3 and the tests)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers.cli_helpers import run_cli
from helpers.provenance_helpers import stripped, with_pixels
from helpers.train_helpers import TinyDataset, gan_config, ops_ready, vae_config
from PIL import Image

from fastgen.cli import main
from fastgen.provenance.verify import NO_PROVENANCE, NOT_VERIFIED, VERIFIED, verify_image


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny conditional DCGAN runs (different seeds), and the first one's samples."""
    from fastgen.train import train_gan

    tmp = tmp_path_factory.mktemp("verify")
    first = train_gan(
        gan_config(tmp / "a", sample_every=3, conditional=True, fused=ops_ready()),
        TinyDataset(), progress=False,
    )  # fmt: skip
    other = train_gan(
        gan_config(tmp / "b", seed=11, conditional=True, fused=ops_ready()),
        TinyDataset(), progress=False,
    )  # fmt: skip
    ckpt = first["checkpoint"]
    grid = tmp / "grid.png"
    assert main(["sample", ckpt, "--n", "5", "--seed", "4", "--out", str(grid), "--separate",
                 "--device", "cpu"]) == 0  # fmt: skip
    return {"ckpt": ckpt, "other": other["checkpoint"], "out": Path(first["out_dir"]),
            "grid": grid, "tmp": tmp}  # fmt: skip


def test_regeneration_verifies_the_true_checkpoint(runs):
    for image in (runs["grid"], runs["tmp"] / "grid_0002.png"):
        result = verify_image(image, runs["ckpt"])
        assert result.status == VERIFIED, result.reasons
        assert result.regeneration["state"] == "reproduced"
        assert result.regeneration["max_difference"] == 0  # bit for bit on this device kind
        assert result.manifest["state"] == "none"


def test_regeneration_rejects_another_checkpoint(runs):
    result = verify_image(runs["grid"], runs["other"])
    assert result.status == NOT_VERIFIED
    assert "is not the checkpoint recorded" in result.regeneration["detail"]


def test_training_grids_regenerate_from_their_runs_checkpoint(runs):
    grid = runs["out"] / "samples" / "step_000006.png"
    assert verify_image(grid, runs["ckpt"]).status == VERIFIED
    earlier = runs["out"] / "samples" / "step_000003.png"  # made by step 3's weights
    result = verify_image(earlier, runs["ckpt"])
    assert result.status == NOT_VERIFIED and "step 6" in result.regeneration["detail"]
    other = verify_image(grid, runs["other"])
    assert other.status == NOT_VERIFIED and "run_id" in other.regeneration["detail"]


def test_one_changed_pixel_fails_regeneration(runs, tmp_path):
    data = runs["grid"].read_bytes()
    with Image.open(runs["grid"]) as image:
        pixels = np.array(image)
    pixels[3, 4] ^= 1
    changed = tmp_path / "changed.png"
    changed.write_bytes(with_pixels(data, pixels))
    result = verify_image(changed, runs["ckpt"])
    assert result.status == NOT_VERIFIED
    assert pixels.ndim == 2  # the digits-like tiny run is grey: one value changed
    assert result.regeneration["differing_values"] == 1
    assert result.regeneration["max_difference"] == 1
    assert "1 values differ, by up to 1 levels" in result.regeneration["detail"]


def test_marks_alone_are_not_verified_and_stripped_images_have_no_provenance(runs, tmp_path):
    assert verify_image(runs["grid"]).status == NOT_VERIFIED  # nothing checks the marks
    bare = tmp_path / "bare.png"
    bare.write_bytes(stripped(runs["grid"].read_bytes()))
    for checkpoint in (None, runs["ckpt"]):
        result = verify_image(bare, checkpoint)
        assert result.status == NO_PROVENANCE and result.marks is None
        assert result.reasons[0].startswith("no provenance found")


def test_jpeg_and_webp_regenerate(runs, tmp_path):
    for suffix in (".jpg", ".webp"):
        out = tmp_path / f"s{suffix}"
        assert main(["sample", runs["ckpt"], "--n", "3", "--out", str(out), "--device", "cpu"]) == 0
        result = verify_image(out, runs["ckpt"])
        assert result.status == VERIFIED, (suffix, result.reasons)


def test_a_reconstruction_grid_cannot_be_regenerated(tmp_path):
    from fastgen.train import train_vae

    result = train_vae(vae_config(tmp_path, fused=ops_ready()), TinyDataset(), progress=False)
    folder = Path(result["out_dir"]) / "samples"
    assert verify_image(folder / "step_000006.png", result["checkpoint"]).status == VERIFIED
    recon = verify_image(folder / "recon_000006.png", result["checkpoint"])
    assert recon.status == NOT_VERIFIED and recon.regeneration["state"] == "not possible"
    assert "training images" in recon.regeneration["detail"]


def test_verify_command_exit_codes_and_json(runs, tmp_path, capsys):
    grid, ckpt = str(runs["grid"]), runs["ckpt"]
    code, out, _ = run_cli(["verify", grid, "--checkpoint", ckpt], capsys)
    assert code == 0 and out.startswith(f"{grid}: verified")
    assert "regeneration: reproduced" in out
    code, out, _ = run_cli(["verify", grid, "--checkpoint", runs["other"]], capsys)
    assert code == 1 and f"{grid}: not verified" in out
    bare = tmp_path / "bare.png"
    bare.write_bytes(stripped(runs["grid"].read_bytes()))
    code, out, _ = run_cli(["verify", str(bare)], capsys)
    assert code == 3 and "no provenance found" in out and "verified" not in out
    code, out, _ = run_cli(["verify", grid, str(bare), "--checkpoint", ckpt, "--json"], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 3 and [r["status"] for r in rows] == [VERIFIED, NO_PROVENANCE]
    assert rows[0]["marks"]["seed"] == "4"
    code, _, err = run_cli(["verify", str(tmp_path / "missing.png")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no file at" in err


def test_sampling_records_its_convolution_policy_and_regeneration_takes_it(
    runs, tmp_path, monkeypatch
):
    from fastgen.provenance.marks import read_marks

    monkeypatch.setenv("FASTGEN_AUTOTUNE", "1")  # a timed choice: sampling does not take it
    out = tmp_path / "timed.png"
    assert main(["sample", runs["ckpt"], "--n", "2", "--out", str(out), "--device", "cpu"]) == 0
    assert read_marks(out)["conv_cpu"] == "fixed"
    monkeypatch.setenv("FASTGEN_CONV_CPU", "aten")
    forced = tmp_path / "aten.png"
    assert main(["sample", runs["ckpt"], "--n", "2", "--out", str(forced), "--device", "cpu"]) == 0
    assert read_marks(forced)["conv_cpu"] == "aten"
    monkeypatch.setenv("FASTGEN_CONV_CPU", "fastgen")
    for image in (out, forced):
        assert verify_image(image, runs["ckpt"]).status == VERIFIED
    assert os.environ["FASTGEN_CONV_CPU"] == "fastgen"  # restored after each computation
    assert os.environ["FASTGEN_AUTOTUNE"] == "1"


def test_another_device_kind_is_compared_within_the_cross_device_tolerance(runs, tmp_path):
    from fastgen.provenance.marks import read_marks, save_options, xmp_packet
    from fastgen.provenance.verify import CROSS_DEVICE_LEVELS

    marks = read_marks(runs["grid"])
    fields = {k: v for k, v in marks.items() if k not in ("digital_source_type", "software_agent")}
    with Image.open(runs["grid"]) as image:
        pixels = np.array(image).astype(np.int16)
    pixels[2, 2] += 1 if pixels[2, 2] < 255 else -1  # one level, as another GPU might round
    for device, expected in (("cuda/Some GPU", VERIFIED), (marks["device"], NOT_VERIFIED)):
        path = tmp_path / f"{expected.replace(' ', '_')}.png"
        packet = xmp_packet({**fields, "device": device})
        Image.fromarray(pixels.astype(np.uint8)).save(path, **save_options("PNG", packet))
        result = verify_image(path, runs["ckpt"])
        assert result.status == expected, result.reasons
        assert result.regeneration["tolerance"] == (
            CROSS_DEVICE_LEVELS if device.startswith("cuda") else 0
        )
