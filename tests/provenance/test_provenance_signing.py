"""fastgen.provenance.signing: signed Content Credentials (C2PA) made with a test CA and signing
certificate made at test time; a changed pixel or manifest byte invalidates them; a bad key,
a bad certificate and a missing extra are one line each with nothing written (issue 26,
item 2). Skipped, with the reason, where the [provenance] extra is not installed."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from helpers.cli_helpers import run_cli
from helpers.provenance_helpers import (
    build_png,
    make_ca,
    make_signing_files,
    needs_signing,
    png_chunks,
    stripped,
    with_pixels,
)
from helpers.train_helpers import TinyDataset, gan_config, ops_ready
from PIL import Image

from fastgen.cli import main
from fastgen.provenance import marks as xmp
from fastgen.provenance.verify import NO_PROVENANCE, NOT_VERIFIED, VERIFIED, verify_image

AI = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from fastgen.train import train_gan

    tmp = tmp_path_factory.mktemp("signing")
    config = gan_config(tmp, fused=ops_ready())
    return train_gan(config, TinyDataset(), progress=False)["checkpoint"]


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    return make_signing_files(tmp_path_factory.mktemp("credentials"))


@pytest.fixture(scope="module")
def signed(checkpoint, credentials, tmp_path_factory):
    """A signed grid and its signed separate images."""
    out = tmp_path_factory.mktemp("signed") / "grid.png"
    assert main(["sample", checkpoint, "--n", "3", "--seed", "2", "--out", str(out), "--separate",
                 "--sign-cert", str(credentials["chain"]), "--sign-key", str(credentials["key"]),
                 "--device", "cpu"]) == 0  # fmt: skip
    return out


@needs_signing
def test_a_signed_sample_verifies(signed, checkpoint, credentials):
    for image in (signed, signed.with_name("grid_0001.png")):
        result = verify_image(image)
        assert result.status == VERIFIED, result.reasons
        manifest = result.manifest
        assert manifest["state"] == "valid" and manifest["created_by_model"]
        assert manifest["claim_generator"] == ["fastgen"]
        assert "fastgen test signer" in manifest["signer"] and not manifest["trusted"]
        fields = {k: v for k, v in result.marks.items()
                  if k not in ("digital_source_type", "software_agent")}  # fmt: skip
        assert manifest["assertion"] == fields  # checkpoint hash, run id, seed, index, ...
        assert fields["seed"] == "2"
    assert verify_image(signed.with_name("grid_0001.png")).manifest["assertion"]["index"] == "1"
    both = verify_image(signed, checkpoint, trust_anchors=credentials["ca"].read_text())
    assert both.status == VERIFIED and both.manifest["trusted"]
    assert both.reasons == ["proved by: C2PA signature (trusted), regeneration"]


@needs_signing
def test_the_manifest_says_created_by_a_trained_model(signed):
    import c2pa

    with open(signed, "rb") as handle, c2pa.Reader("image/png", handle) as reader:
        manifest = reader.get_active_manifest()
    actions = next(a for a in manifest["assertions"] if a["label"].startswith("c2pa.actions"))
    created = actions["data"]["actions"][0]
    assert created["action"] == "c2pa.created" and created["digitalSourceType"] == AI
    assert created["softwareAgent"]["name"] == "fastgen"


@needs_signing
def test_a_signature_from_another_ca_is_not_trusted(signed):
    other_ca = make_ca("another CA")[0]
    from cryptography.hazmat.primitives import serialization

    anchors = other_ca.public_bytes(serialization.Encoding.PEM).decode()
    result = verify_image(signed, trust_anchors=anchors)
    assert result.status == NOT_VERIFIED and "trust anchors" in result.reasons[0]


@needs_signing
def test_one_changed_pixel_invalidates_the_signature(signed, tmp_path):
    with Image.open(signed) as image:
        pixels = np.array(image)
    pixels[0, 0] ^= 1
    changed = tmp_path / "changed.png"
    changed.write_bytes(with_pixels(signed.read_bytes(), pixels))
    assert xmp.read_marks(changed) is not None  # the marks are intact, the pixels are not
    result = verify_image(changed)
    assert result.status == NOT_VERIFIED and result.manifest["state"] == "invalid"
    assert "dataHash.mismatch" in result.manifest["detail"]


@needs_signing
@pytest.mark.parametrize("target", [b"fastgen test signer", b"dseeda2"])
def test_one_changed_manifest_byte_invalidates_the_signature(signed, tmp_path, target):
    """A byte of the signing certificate in the manifest, or of the signed assertion (CBOR:
    the key "seed", then its value "2")."""
    chunks = png_chunks(signed.read_bytes())
    index = next(i for i, (kind, _) in enumerate(chunks) if kind == b"caBX")  # the manifest
    body = bytearray(chunks[index][1])
    at = bytes(body).find(target)
    assert at >= 0
    body[at + len(target) - 1] ^= 1
    chunks[index] = (b"caBX", bytes(body))
    changed = tmp_path / "changed.png"
    changed.write_bytes(build_png(chunks))
    result = verify_image(changed)
    assert result.status == NOT_VERIFIED and result.manifest["state"] == "invalid"


@needs_signing
def test_a_stripped_signed_image_has_no_provenance(signed, tmp_path):
    bare = tmp_path / "bare.png"
    bare.write_bytes(stripped(signed.read_bytes()))
    assert verify_image(bare).status == NO_PROVENANCE


@needs_signing
def test_signing_from_the_environment_and_json(checkpoint, credentials, tmp_path, monkeypatch,
                                               capsys):  # fmt: skip
    monkeypatch.setenv("FASTGEN_SIGN_CERT", str(credentials["chain"]))
    monkeypatch.setenv("FASTGEN_SIGN_KEY", str(credentials["key"]))
    out = tmp_path / "env.jpg"
    code, _, err = run_cli(["sample", checkpoint, "--n", "2", "--out", str(out), "--device",
                            "cpu"], capsys)  # fmt: skip
    assert code == 0, err
    code, printed, _ = run_cli(["verify", str(out), "--json"], capsys)
    row = json.loads(printed)
    assert code == 0 and row["manifest"]["state"] == "valid" and row["status"] == VERIFIED


def _bad_key(credentials, tmp_path):
    path = tmp_path / "garbage.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    return ["--sign-cert", str(credentials["chain"]), "--sign-key", str(path)]


def _other_key(credentials, tmp_path):
    other = make_signing_files(tmp_path / "other")
    return ["--sign-cert", str(credentials["chain"]), "--sign-key", str(other["key"])]


def _not_pem(credentials, tmp_path):
    path = tmp_path / "cert.der"
    path.write_bytes(b"\x30\x82 binary")
    return ["--sign-cert", str(path), "--sign-key", str(credentials["key"])]


def _web_server_certificate(credentials, tmp_path):
    files = make_signing_files(tmp_path / "web", server_auth=True)
    return ["--sign-cert", str(files["chain"]), "--sign-key", str(files["key"])]


def _missing_file(credentials, tmp_path):
    return ["--sign-cert", str(tmp_path / "none.pem"), "--sign-key", str(credentials["key"])]


def _one_half(credentials, tmp_path):
    return ["--sign-cert", str(credentials["chain"])]


@needs_signing
@pytest.mark.parametrize(
    "make, needles",
    [
        (_bad_key, ["--sign-key", "garbage.pem is not an unencrypted PEM private key"]),
        (_other_key, ["--sign-key", "is not the key of", "fastgen test signer"]),
        (_not_pem, ["--sign-cert", "cert.der is not a PEM file"]),
        (
            _web_server_certificate,
            [
                "--sign-cert",
                "c2pa refused to sign with this certificate",
                "extended key usage such as emailProtection",
            ],
        ),
        (_missing_file, ["--sign-cert", "none.pem: cannot read the certificate chain"]),
        (_one_half, ["signing needs both a certificate chain and its key"]),
    ],
)
def test_bad_keys_and_certificates_are_one_line_and_write_nothing(
    checkpoint, credentials, tmp_path, capsys, make, needles
):
    argv = make(credentials, tmp_path)
    out = tmp_path / "out"
    code, _, err = run_cli(["sample", checkpoint, "--n", "2", "--out", str(out / "g.png"),
                            "--separate", "--device", "cpu", *argv], capsys)  # fmt: skip
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("fastgen sample: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists()  # no image, not even a temporary


@needs_signing
def test_a_bad_key_from_the_environment_names_the_variable(checkpoint, credentials, tmp_path,
                                                           monkeypatch, capsys):  # fmt: skip
    monkeypatch.setenv("FASTGEN_SIGN_CERT", str(credentials["chain"]))
    monkeypatch.setenv("FASTGEN_SIGN_KEY", str(credentials["ca"]))  # a certificate, not a key
    code, _, err = run_cli(["sample", checkpoint, "--out", str(tmp_path / "g.png")], capsys)
    assert code == 2 and "error: FASTGEN_SIGN_KEY " in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g.png").exists()


def test_a_missing_extra_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    """Runs with or without the extra: its absence is simulated."""
    from fastgen.provenance import signing

    monkeypatch.setattr(signing, "missing", lambda *modules: list(modules))
    out = tmp_path / "g.png"
    code, _, err = run_cli(["sample", str(tmp_path / "any.pt"), "--out", str(out),
                            "--sign-cert", "c.pem", "--sign-key", "k.pem"], capsys)  # fmt: skip
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "c2pa-python and cryptography are not installed" in lines[0]
    assert 'pip install ".[provenance]"' in lines[0] and not out.exists()


def test_a_manifest_without_the_extra_is_unchecked_not_verified(tmp_path, monkeypatch):
    """An image with a C2PA manifest, read where c2pa-python is missing (simulated)."""
    from fastgen.provenance import signing

    image = tmp_path / "fake.png"
    data = build_png([(b"IHDR", (1).to_bytes(4, "big") * 2 + b"\x08\x00\x00\x00\x00"),
                      (b"caBX", b"jumb....c2pa"), (b"IDAT", zlib.compress(b"\0\0")),
                      (b"IEND", b"")])  # fmt: skip
    image.write_bytes(data)
    monkeypatch.setattr(signing, "missing", lambda *modules: list(modules))
    result = verify_image(image)
    assert result.status == NOT_VERIFIED and result.manifest["state"] == "unchecked"
    assert "pip install" in result.reasons[0]
