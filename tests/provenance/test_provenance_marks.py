"""fastgen.provenance.marks and every writer of images: the XMP marks, read back with Pillow and
checked field by field (issue 26, item 1)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers.train_helpers import TinyDataset, gan_config, ops_ready, vae_config
from PIL import Image

from fastgen.cli import main
from fastgen.provenance import marks as xmp
from fastgen.provenance.record import file_sha256
from fastgen.utils.images import read_png_metadata, save_image_grid

AI = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def standard_marks(marks: dict) -> None:
    import fastgen

    assert marks["digital_source_type"] == AI
    assert marks["software_agent"] == f"fastgen {fastgen.__version__}"


def test_the_packet_round_trips_fields_and_escapes_them():
    fields = {"seed": 3, "run_id": 'a"b<c>&d', "index": None, "n": 0}
    marks = xmp.parse_xmp(xmp.xmp_packet(fields))
    standard_marks(marks)
    assert marks["seed"] == "3" and marks["run_id"] == 'a"b<c>&d' and marks["n"] == "0"
    assert "index" not in marks  # None: left out


def test_the_packet_is_standard_xmp():
    packet = xmp.xmp_packet({"seed": 1})
    assert packet.startswith("<?xpacket begin=") and packet.endswith('<?xpacket end="r"?>')
    assert 'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"' in packet
    assert f'Iptc4xmpExt:DigitalSourceType="{AI}"' in packet


def test_foreign_or_broken_xmp_is_no_fastgen_marks():
    foreign = '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about=""/></rdf:RDF></x:xmpmeta>'
    assert xmp.parse_xmp(foreign) is None
    assert xmp.parse_xmp("<not xml") is None


def test_a_bad_field_name_is_named():
    with pytest.raises(ValueError, match=r"fastgen.provenance.xmp_packet: .*'bad name'"):
        xmp.xmp_packet({"bad name": 1})


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_every_format_carries_the_marks(tmp_path, suffix):
    path = save_image_grid(
        torch.rand(4, 3, 8, 8) * 2 - 1, tmp_path / f"g{suffix}", marks={"seed": 5, "n": 4}
    )
    marks = xmp.read_marks(path)
    standard_marks(marks)
    assert marks["seed"] == "5" and marks["n"] == "4"
    with Image.open(path) as image:
        assert image.format == xmp.FORMATS[suffix] and image.size == (22, 22)


def test_unmarked_only_when_asked(tmp_path):
    images = torch.zeros(1, 1, 4, 4)
    assert xmp.read_marks(save_image_grid(images, tmp_path / "plain.png")) is not None
    path = save_image_grid(images, tmp_path / "none.png", provenance=False)
    assert xmp.read_marks(path) is None
    assert read_png_metadata(path)["fastgen:generated"].startswith("true")  # the tEXt stays
    with pytest.raises(ValueError, match=r"save_image_grid: path must end in .png, .jpg"):
        save_image_grid(images, tmp_path / "x.gif")


# --- the writers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    from fastgen.train import train_gan

    tmp = tmp_path_factory.mktemp("marks")
    config = gan_config(tmp, sample_every=3, conditional=True, fused=ops_ready())
    return config, train_gan(config, TinyDataset(), progress=False)


def test_training_sample_grids_are_marked(gan_run):
    from fastgen.checkpoint_io import load_checkpoint

    config, result = gan_run
    run_id = load_checkpoint(result["checkpoint"])["run_id"]
    grids = sorted(Path(result["out_dir"]).glob("samples/*.png"))
    assert [g.name for g in grids] == ["step_000003.png", "step_000006.png"]
    for grid in grids:
        marks = xmp.read_marks(grid)
        standard_marks(marks)
        step = int(grid.stem.split("_")[1])
        assert marks == {**marks, "source": "fastgen train", "image": "train_samples",
                         "kind": "dcgan", "weights": "ema", "run_id": run_id, "step": str(step),
                         "seed": str(config.seed), "n": str(config.num_samples),
                         "nrow": str(math.ceil(math.sqrt(config.num_samples))),
                         "conv_cpu": "fixed"}  # fmt: skip
        assert marks["device"].startswith("cpu/")


def test_vae_grids_and_reconstructions_are_marked_and_no_provenance_unmarks(tmp_path):
    from fastgen.train import train_vae

    result = train_vae(vae_config(tmp_path, fused=ops_ready()), TinyDataset(), progress=False)
    folder = Path(result["out_dir"]) / "samples"
    samples = xmp.read_marks(folder / "step_000006.png")
    recon = xmp.read_marks(folder / "recon_000006.png")
    standard_marks(samples)
    standard_marks(recon)
    assert samples["image"] == "train_samples" and samples["weights"] == "vae"
    assert recon["image"] == "train_reconstructions" and recon["nrow"] == "16"
    plain = train_vae(
        vae_config(tmp_path / "plain", provenance=False), TinyDataset(), progress=False
    )
    for grid in (Path(plain["out_dir"]) / "samples").glob("*.png"):
        assert xmp.read_marks(grid) is None


def test_sample_grid_separate_images_and_interpolation_are_marked(gan_run, tmp_path):
    _, result = gan_run
    ckpt = result["checkpoint"]
    common = {"source": "fastgen sample", "kind": "dcgan", "weights": "ema", "step": "6",
              "checkpoint_sha256": file_sha256(ckpt), "conv_cpu": "fixed"}  # fmt: skip
    out = tmp_path / "g.png"
    assert main(["sample", ckpt, "--n", "5", "--nrow", "2", "--seed", "7", "--class", "1",
                 "--out", str(out), "--separate", "--device", "cpu"]) == 0  # fmt: skip
    grid = xmp.read_marks(out)
    standard_marks(grid)
    assert grid == {**grid, **common, "image": "grid", "seed": "7", "n": "5", "nrow": "2",
                    "class_label": "1"}  # fmt: skip
    assert "index" not in grid
    for index in range(5):
        single = xmp.read_marks(tmp_path / f"g_{index:04d}.png")
        assert single == {**grid, "image": "single", "index": str(index)}
        with Image.open(tmp_path / f"g_{index:04d}.png") as image:
            assert image.size == (16, 16)  # one image, no grid padding
    strip = tmp_path / "strip.webp"
    assert main(["sample", ckpt, "--n", "2", "--interpolate", "4", "--out", str(strip),
                 "--device", "cpu"]) == 0  # fmt: skip
    marks = xmp.read_marks(strip)
    assert marks == {**marks, **common, "image": "interpolation", "n": "2", "nrow": "4",
                     "interpolation_steps": "4", "seed": "0"}  # fmt: skip
    plain = tmp_path / "plain.png"
    assert main(["sample", ckpt, "--n", "2", "--out", str(plain), "--no-provenance",
                 "--device", "cpu"]) == 0  # fmt: skip
    assert xmp.read_marks(plain) is None
