"""A test certificate authority and signing certificates made at test time (cryptography), a
tiny trained checkpoint, and byte-level edits of PNG files, for the provenance tests."""

from __future__ import annotations

import datetime
import zlib
from pathlib import Path

import pytest

from fastgen.utils.extras import missing

SIGNING_MISSING = missing("c2pa", "cryptography")
needs_signing = pytest.mark.skipif(
    bool(SIGNING_MISSING),
    reason=f"fastgen's [provenance] extra is not installed ({', '.join(SIGNING_MISSING)} "
    f"missing): the C2PA signing tests need c2pa-python and cryptography",
)


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fastgen tests"),
        ]
    )


def _usage(*, signing: bool):
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=signing, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=not signing,
        crl_sign=not signing, encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _pem(obj) -> bytes:
    from cryptography.hazmat.primitives import serialization

    if hasattr(obj, "public_bytes"):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(common_name: str = "fastgen test CA"):
    """(certificate, key) of a CA that issues signing certificates."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(signing=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_signing_files(folder: Path, ca=None, *, server_auth: bool = False) -> dict[str, Path]:
    """Writes chain.pem (a signing certificate with the digitalSignature key usage and the
    emailProtection extended key usage that C2PA asks for, then its CA), key.pem and ca.pem
    into `folder`; `server_auth`: the certificate's extended key usage is a web server's
    (serverAuth), which C2PA refuses."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    folder.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = ca or make_ca()
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_auth else ExtendedKeyUsageOID.EMAIL_PROTECTION
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fastgen test signer"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(signing=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"chain": folder / "chain.pem", "key": folder / "key.pem", "ca": folder / "ca.pem"}
    paths["chain"].write_bytes(_pem(cert) + _pem(ca_cert))
    paths["key"].write_bytes(_pem(key))
    paths["ca"].write_bytes(_pem(ca_cert))
    return paths


# --- PNG chunks --------------------------------------------------------------------------------


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """[(type, body)] of a PNG file's chunks, in order."""
    chunks, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def build_png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A PNG file of `chunks` (CRCs computed)."""
    out = bytearray(b"\x89PNG\r\n\x1a\n")
    for kind, body in chunks:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        out += len(body).to_bytes(4, "big") + kind + body + crc
    return bytes(out)


def with_pixels(data: bytes, pixels) -> bytes:
    """The PNG `data` (8-bit grey or RGB, not interlaced, one IDAT) with its pixels replaced by
    `pixels` [H, W] or [H, W, C] uint8 and every other chunk, metadata included, kept."""
    rows = pixels.reshape(pixels.shape[0], -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 on every row
    chunks = [c for c in png_chunks(data) if c[0] != b"IDAT"]
    end = next(i for i, c in enumerate(chunks) if c[0] == b"IEND")
    return build_png(chunks[:end] + [(b"IDAT", zlib.compress(raw))] + chunks[end:])


def stripped(data: bytes) -> bytes:
    """The PNG `data` with only its image chunks (what a metadata stripper leaves)."""
    keep = (b"IHDR", b"PLTE", b"IDAT", b"IEND")
    return build_png([c for c in png_chunks(data) if c[0] in keep])
