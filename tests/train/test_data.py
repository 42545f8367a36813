"""fastgen.data (digits, photos, image folders, IDX files) and fastgen.utils.images."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

import fastgen  # noqa: E402
from fastgen.data import DataError, ImageDataset, load_dataset  # noqa: E402
from fastgen.utils.images import (  # noqa: E402
    GENERATED_KEY,
    make_grid,
    read_png_metadata,
    save_image_grid,
)


def check_dataset(data: ImageDataset, n: int, channels: int, resolution: int) -> None:
    assert isinstance(data, ImageDataset)
    assert data.images.dtype == torch.float32
    assert data.images.shape == (n, channels, resolution, resolution)
    assert data.images.min() >= -1.0 and data.images.max() <= 1.0
    assert len(data) == n
    image, label = data[0]
    assert image.shape == (channels, resolution, resolution)
    assert isinstance(label, int)


# --- embedded sources ---------------------------------------------------------------------


def test_digits_split_is_fixed_disjoint_and_complete():
    train = load_dataset("digits", resolution=16)
    test = load_dataset("digits", resolution=16, split="test")
    every = load_dataset("digits", resolution=16, split="all")
    check_dataset(train, 1617, 1, 16)
    check_dataset(test, 180, 1, 16)
    check_dataset(every, 1797, 1, 16)
    assert train.num_classes == test.num_classes == 10
    assert train.labels.dtype == torch.int64
    assert set(test.labels.tolist()) == set(range(10))
    # train and test are disjoint and together are all the digits
    both = torch.cat([train.images, test.images]).flatten(1)
    assert (
        torch.unique(both, dim=0).shape[0] == torch.unique(every.images.flatten(1), dim=0).shape[0]
    )
    again = load_dataset("digits", resolution=16, split="test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


def test_digits_upscaled_keep_their_content():
    small = load_dataset("digits", resolution=8, split="all")
    big = load_dataset("digits", resolution=32, split="all", channels=3)
    check_dataset(big, 1797, 3, 32)
    assert small.images.min() == -1.0 and small.images.max() == 1.0  # 0 and 16 grey levels
    down = torch.nn.functional.avg_pool2d(big.images[:, :1], 4)
    # bilinear upscaling blurs a little, but pooled back it is the same picture
    corr = torch.corrcoef(torch.stack([down.flatten(), small.images.flatten()]))[0, 1]
    assert corr > 0.95, corr
    _, label = big[5]
    assert label == 5


def test_photos_patches():
    data = load_dataset("photos", resolution=64, split="all")
    check_dataset(data, 456, 3, 64)
    assert data.labels is None and data.num_classes == 0
    assert data[0][1] == -1
    train = load_dataset("photos", resolution=32)
    test = load_dataset("photos", resolution=32, split="test")
    assert len(train) + len(test) == 456 and train.resolution == 32
    gray = load_dataset("photos", resolution=32, channels=1, split="test")
    check_dataset(gray, len(test), 1, 32)


# --- image folders ------------------------------------------------------------------------


def write_image(path, size, color, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_image_folder_recursive_resize_center_crop_and_labels(tmp_path):
    write_image(tmp_path / "cats" / "a.png", (40, 20), (255, 0, 0))
    write_image(tmp_path / "cats" / "deep" / "b.JPG", (20, 20), (0, 0, 255))
    write_image(tmp_path / "dogs" / "c.jpeg", (16, 30), 128, mode="L")
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    data = load_dataset(str(tmp_path), resolution=8, split="all")
    check_dataset(data, 3, 3, 8)  # one colour image -> everything RGB
    assert data.class_names == ["cats", "dogs"]
    assert data.labels.tolist() == [0, 0, 1]
    red = data.images[0]
    assert torch.allclose(red[0], torch.ones(8, 8)) and torch.allclose(red[1], -torch.ones(8, 8))
    gray = data.images[2]
    assert (
        torch.allclose(gray[0], gray[1]) and abs(gray[0].mean().item() - (128 / 127.5 - 1)) < 1e-2
    )


def test_image_folder_grayscale_and_channel_conversion(tmp_path):
    for i in range(5):
        write_image(tmp_path / f"{i}.png", (12, 12), 40 * i, mode="L")
    data = load_dataset(tmp_path, resolution=12, split="all")
    check_dataset(data, 5, 1, 12)
    assert data.labels is None
    rgb = load_dataset(tmp_path, resolution=6, channels=3, split="all")
    check_dataset(rgb, 5, 3, 6)
    assert (
        len(load_dataset(tmp_path, resolution=6)) + len(load_dataset(tmp_path, split="test")) == 5
    )


def test_corrupt_image_is_skipped_with_a_warning(tmp_path):
    write_image(tmp_path / "good.png", (10, 10), (0, 255, 0))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.warns(UserWarning, match="skipping unreadable image .*broken.png"):
        data = load_dataset(str(tmp_path), resolution=4, split="all")
    check_dataset(data, 1, 3, 4)


def test_folder_with_only_corrupt_images_is_an_error(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="none of the images"):
        load_dataset(str(tmp_path), split="all")


# --- folders: every Pillow format, counts, labels, memory (issue 14, item 10) ---------------


def test_every_format_pillow_reads_is_loaded_and_counted(tmp_path, capsys):
    write_image(tmp_path / "a.png", (8, 8), (255, 0, 0))
    write_image(tmp_path / "b.webp", (8, 8), (0, 255, 0))
    write_image(tmp_path / "c.bmp", (8, 8), (0, 0, 255))
    write_image(tmp_path / "d.tiff", (8, 8), (255, 255, 0))
    write_image(tmp_path / "e.gif", (8, 8), 50, mode="L")
    (tmp_path / "f.png").write_bytes(b"not an image at all")
    with pytest.warns(UserWarning, match="skipping unreadable image .*f.png"):
        data = load_dataset(str(tmp_path), resolution=4, split="all")
    assert len(data) == 5
    err = capsys.readouterr().err
    assert f"{tmp_path}: loaded 5 images (1 skipped)" in err


def test_a_stray_image_next_to_class_folders_warns_that_labels_are_dropped(tmp_path, capsys):
    for name in ("cats", "dogs"):
        for i in range(3):
            write_image(tmp_path / name / f"{i}.png", (6, 6), (40 * i, 0, 0))
    write_image(tmp_path / "stray.png", (6, 6), (0, 0, 0))
    with pytest.warns(UserWarning, match=r"no labels: 1 image .*stray.png.* not in a class folder"):
        data = load_dataset(str(tmp_path), resolution=4, split="all")
    assert data.labels is None and len(data) == 7
    assert "stray.png" in data.unlabelled_reason
    # the split follows the folder, not the split: no labels in either part
    with pytest.warns(UserWarning, match="no labels"):
        assert load_dataset(str(tmp_path), resolution=4, split="test").labels is None
    (tmp_path / "stray.png").unlink()
    assert (
        load_dataset(str(tmp_path), resolution=4, split="all").labels.tolist() == [0] * 3 + [1] * 3
    )


def test_folder_images_are_held_as_uint8(tmp_path):
    for i in range(6):
        write_image(tmp_path / f"{i}.png", (16, 16), (40 * i, 255 - 40 * i, 7))
    data = load_dataset(str(tmp_path), resolution=8, split="all")
    assert data.pixels is not None and data.pixels.dtype == torch.uint8  # a quarter of float32
    assert data.pixels.shape == (6, 3, 8, 8)
    expected = data.pixels.float() * (2 / 255) - 1
    torch.testing.assert_close(data.images, expected, rtol=0, atol=1e-6)
    image, label = data[2]
    torch.testing.assert_close(image, expected[2], rtol=0, atol=1e-6)
    assert label == -1 and image.dtype == torch.float32


def test_large_folders_show_progress(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("fastgen.data.folder.PROGRESS_MIN_IMAGES", 3)
    for i in range(4):
        write_image(tmp_path / f"{i}.png", (8, 8), (i, i, i))
    load_dataset(str(tmp_path), resolution=4, split="all")
    err = capsys.readouterr().err
    assert "decoding" in err and "4/4" in err


# --- IDX ----------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">f4"): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(folder, prefix, n, gz):
    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    suffix = ".gz" if gz else ""
    opener = gzip.compress if gz else (lambda b: b)
    (folder / f"{prefix}-images-idx3-ubyte{suffix}").write_bytes(opener(idx_bytes(images)))
    (folder / f"{prefix}-labels-idx1-ubyte{suffix}").write_bytes(opener(idx_bytes(labels)))
    return images, labels


def test_idx_folder_uses_train_and_t10k_files(tmp_path):
    train_images, train_labels = write_mnist(tmp_path, "train", 30, gz=True)
    write_mnist(tmp_path, "t10k", 7, gz=False)
    train = load_dataset(str(tmp_path), resolution=28)
    check_dataset(train, 30, 1, 28)
    assert train.labels.tolist() == train_labels.tolist() and train.num_classes == 10
    expected = torch.from_numpy(train_images.astype(np.float32)) / 127.5 - 1
    torch.testing.assert_close(train.images[:, 0], expected)
    check_dataset(load_dataset(str(tmp_path), resolution=32, split="test"), 7, 1, 32)
    check_dataset(load_dataset(str(tmp_path), resolution=16, split="all"), 37, 1, 16)


def test_idx_single_file_and_float_data(tmp_path):
    _, labels = write_mnist(tmp_path, "train", 20, gz=False)
    data = load_dataset(str(tmp_path / "train-images-idx3-ubyte"), resolution=28, split="all")
    assert data.labels.tolist() == labels.tolist()
    floats = np.linspace(0, 1, 3 * 4 * 4, dtype=">f4").reshape(3, 4, 4)
    (tmp_path / "f.idx").write_bytes(idx_bytes(floats))
    data = load_dataset(str(tmp_path / "f.idx"), resolution=4, split="all")
    assert data.labels is None and data.images.min() == -1.0 and data.images.max() == 1.0


def test_truncated_idx_file_is_an_error(tmp_path):
    raw = idx_bytes(np.zeros((4, 5, 5), dtype=np.uint8))
    (tmp_path / "cut-images-idx3-ubyte").write_bytes(raw[:-10])
    with pytest.raises(DataError, match="cut-images-idx3-ubyte.*truncated"):
        load_dataset(str(tmp_path / "cut-images-idx3-ubyte"))
    (tmp_path / "junk.bin").write_bytes(b"hello world")
    with pytest.raises(DataError, match="junk.bin is not an IDX file"):
        load_dataset(str(tmp_path / "junk.bin"))


# --- bad arguments and paths --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            dict(source="does/not/exist"),
            "no such file or folder: .*does/not/exist.*expected 'digits'",
        ),
        (dict(source=""), "source must be a non-empty string"),
        (dict(source="digits", resolution=0), "resolution must be a positive int, got 0"),
        (dict(source="digits", channels=2), "channels must be None, 1 or 3, got 2"),
        (dict(source="digits", split="val"), "split must be one of train, test, all"),
    ],
)
def test_bad_arguments(kwargs, match):
    source = kwargs.pop("source")
    with pytest.raises(DataError, match=match) as info:
        load_dataset(source, **kwargs)
    assert isinstance(info.value, ValueError)
    assert "fastgen.data.load_dataset" in str(info.value)


def test_empty_folder_and_single_image_are_errors(tmp_path):
    with pytest.raises(DataError, match="no images .*found under"):
        load_dataset(str(tmp_path))
    write_image(tmp_path / "one.png", (4, 4), (1, 2, 3))
    with pytest.raises(DataError, match="single image"):
        load_dataset(str(tmp_path / "one.png"))


def test_works_with_a_dataloader():
    data = load_dataset("digits", resolution=16, split="test")
    images, labels = next(iter(torch.utils.data.DataLoader(data, batch_size=8)))
    assert images.shape == (8, 1, 16, 16) and labels.dtype == torch.int64
    photos = load_dataset("photos", resolution=16, split="test")
    _, labels = next(iter(torch.utils.data.DataLoader(photos, batch_size=4)))
    assert labels.tolist() == [-1] * 4


# --- image grids --------------------------------------------------------------------------


def test_save_image_grid_pixels_and_metadata(tmp_path):
    images = torch.stack([torch.full((3, 4, 4), v) for v in (-1.0, 1.0, 0.0)])
    meta = {"model": "abc123", "step": "42", "seed": "7", "Software": "overridden?"}
    path = save_image_grid(images, tmp_path / "sub" / "grid.png", nrow=3, metadata=meta)
    assert path == tmp_path / "sub" / "grid.png"
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    text = read_png_metadata(path)
    assert text["Software"] == f"fastgen {fastgen.__version__}"
    assert text[GENERATED_KEY].startswith("true")
    assert (text["model"], text["step"], text["seed"]) == ("abc123", "42", "7")
    with Image.open(path) as png:
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.shape == (2 + 4 + 2, 2 + 3 * 6, 3)
    assert (pixels[2:6, 2:6] == 0).all() and (pixels[2:6, 8:12] == 255).all()
    assert (pixels[0, 0] == 128).all()  # mid-grey padding


def test_save_image_grid_grayscale_default_rows_and_bad_input(tmp_path):
    grid = make_grid(torch.zeros(5, 1, 2, 2))
    assert grid.shape == (1, 2 * 4 + 2, 3 * 4 + 2)  # ceil(sqrt(5)) = 3 per row, 2 rows
    nan = torch.full((2, 1, 3, 3), float("nan"))
    path = save_image_grid(nan, tmp_path / "g.png")
    with Image.open(path) as png:
        assert png.mode == "L"
    with pytest.raises(ValueError, match="save_image_grid: images must be"):
        save_image_grid(torch.zeros(2, 2, 3, 3), tmp_path / "x.png")
    with pytest.raises(ValueError, match="must end in .png, .jpg, .jpeg or .webp"):
        save_image_grid(torch.zeros(1, 1, 3, 3), tmp_path / "x.gif")  # JPEG, WebP: provenance
