"""Signed Content Credentials: a C2PA manifest embedded in the images fastgen writes.

With a signing certificate chain and its private key (PEM files), ``Signer.from_files`` makes a
signer that save_image_grid hands each encoded image to. The manifest (built and signed by
c2pa-python, the Content Authenticity Initiative's bindings: the ``[provenance]`` extra) holds

  c2pa.actions             one ``c2pa.created`` action, digitalSourceType trainedAlgorithmicMedia,
                           fastgen as its software agent;
  org.fastgen.generation   the image's provenance fields (fastgen.provenance.record.FIELDS:
                           checkpoint sha256, run id, seed, index, ...);

with fastgen as the claim generator. The signature covers the manifest and every byte of the
file outside it (pixels and XMP marks included), so any change to either shows as invalid.

The certificate must meet C2PA's profile: an end-entity certificate (not a CA's), valid now,
with an extended key usage such as emailProtection or documentSigning (not serverAuth); keys:
EC P-256/P-384/P-521 (ES256/384/512), RSA (PS256) or Ed25519. Whether a signature is trusted
is the verifier's call: it names the CAs it trusts (fastgen verify --trust-anchors). ``from_files`` signs a one-pixel image in memory first, so a key or certificate
that c2pa refuses is one ArgumentError before any image is written.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from fastgen.provenance.marks import DIGITAL_SOURCE_TYPE
from fastgen.utils.errors import ArgumentError, one_line
from fastgen.utils.extras import MissingExtraError, missing

ASSERTION = "org.fastgen.generation"
MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
EXTRA = "c2pa-python and cryptography are not installed (fastgen's [provenance] extra)"


def require_provenance_extra(fn: str) -> None:
    """MissingExtraError (one line: what to install) unless c2pa-python and cryptography are
    installed."""
    if missing("c2pa", "cryptography"):
        raise MissingExtraError(
            f'{fn}: {EXTRA}: pip install ".[provenance]" in fastgen\'s source folder, or pip '
            f"install c2pa-python cryptography"
        )


def c2pa_context(trust_anchors: str | None = None):
    """A c2pa Context: no thumbnail in the manifest (it would be larger than a small grid), and
    `trust_anchors` (PEM CA certificates) as the roots a signature is trusted under."""
    import c2pa

    settings: dict = {"builder": {"thumbnail": {"enabled": False}}}
    if trust_anchors:
        settings["trust"] = {"trust_anchors": trust_anchors}
    return c2pa.Context(settings=c2pa.Settings.from_dict(settings))


class Signer:
    """Signs encoded images with a certificate chain and private key (PEM bytes).

    Args:
        cert_chain: the signing certificate first, then the CAs that issued it (PEM).
        private_key: the signing certificate's private key (PEM, unencrypted).
        algorithm: the C2PA signing algorithm ("es256", "es384", "es512", "ps256", "ed25519").
    """

    def __init__(self, cert_chain: bytes, private_key: bytes, algorithm: str) -> None:
        self.cert_chain, self.private_key, self.algorithm = cert_chain, private_key, algorithm

    @classmethod
    def from_files(cls, cert_path: str | os.PathLike, key_path: str | os.PathLike) -> Signer:
        """A Signer from PEM files, checked by a trial signature. Raises MissingExtraError
        without the [provenance] extra, and ArgumentError (argument sign_cert or sign_key)
        naming the file and what is wrong with it."""
        fn = "fastgen.provenance.Signer.from_files"
        require_provenance_extra(fn)
        cert_chain = _read(fn, "sign_cert", cert_path)
        private_key = _read(fn, "sign_key", key_path)
        algorithm = _algorithm(fn, cert_chain, private_key, cert_path, key_path)
        signer = cls(cert_chain, private_key, algorithm)
        signer.check(fn, cert_path)
        return signer

    def check(self, fn: str, cert_path) -> None:
        """Signs a one-pixel PNG in memory: ArgumentError (sign_cert) if c2pa refuses."""
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("L", (1, 1)).save(buffer, format="PNG")
        try:
            self.sign(buffer.getvalue(), "PNG", {}, title="check.png")
        except Exception as exc:  # c2pa's errors (C2paError) name what it refused
            raise ArgumentError(
                fn, "sign_cert", f"{cert_path}: c2pa refused to sign with this certificate and "
                f"key: {one_line(exc)} (C2PA needs an end-entity certificate, valid now, with an "
                f"extended key usage such as emailProtection or documentSigning)",
            ) from exc  # fmt: skip

    def manifest(self, fields: dict, title: str) -> dict:
        """The C2PA manifest definition of an image with provenance `fields`."""
        import fastgen

        agent = {"name": "fastgen", "version": fastgen.__version__}
        return {
            "claim_generator_info": [agent],
            "title": title,
            "assertions": [
                {
                    "label": "c2pa.actions",
                    "data": {
                        "actions": [
                            {
                                "action": "c2pa.created",
                                "digitalSourceType": DIGITAL_SOURCE_TYPE,
                                "softwareAgent": agent,
                            }
                        ]
                    },
                },
                {"label": ASSERTION, "data": {k: str(v) for k, v in fields.items()}},
            ],
        }

    def sign(self, data: bytes, image_format: str, fields: dict, *, title: str) -> bytes:
        """The encoded image `data` ("PNG", "JPEG" or "WEBP") with a signed manifest embedded."""
        import c2pa

        mime = MIME_TYPES[image_format]
        info = c2pa.C2paSignerInfo(self.algorithm, self.cert_chain, self.private_key, None)
        signer = c2pa.Signer.from_info(info)
        try:
            builder = c2pa.Builder(json.dumps(self.manifest(fields, title)), context=c2pa_context())
            out = io.BytesIO()
            builder.sign(signer, mime, io.BytesIO(data), out)
        finally:
            signer.close()
        return out.getvalue()


def _read(fn: str, argument: str, path) -> bytes:
    what = "certificate chain" if argument == "sign_cert" else "private key"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ArgumentError(
            fn, argument, f"{path}: cannot read the {what}: {exc.strerror}"
        ) from exc
    if b"-----BEGIN" not in data:
        raise ArgumentError(fn, argument, f"{path} is not a PEM file (expected the {what})")
    return data


def _algorithm(fn: str, cert_chain: bytes, private_key: bytes, cert_path, key_path) -> str:
    """The C2PA algorithm of the key, after checking that the chain's first certificate is the
    key's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        certs = x509.load_pem_x509_certificates(cert_chain)
    except ValueError as exc:
        raise ArgumentError(
            fn, "sign_cert", f"{cert_path} holds no readable PEM certificate: {one_line(exc)}"
        ) from exc
    try:
        key = serialization.load_pem_private_key(private_key, password=None)
    except (ValueError, TypeError) as exc:
        raise ArgumentError(
            fn, "sign_key", f"{key_path} is not an unencrypted PEM private key: {one_line(exc)}"
        ) from exc
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, public) != certs[0].public_key().public_bytes(
        encoding, public
    ):
        raise ArgumentError(
            fn, "sign_key", f"{key_path} is not the key of {cert_path}'s first certificate "
            f"({certs[0].subject.rfc4514_string()})",
        )  # fmt: skip
    if isinstance(key, ec.EllipticCurvePrivateKey):
        curves = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name in curves:
            return curves[key.curve.name]
    elif isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise ArgumentError(
        fn, "sign_key", f"{key_path}: C2PA signs with EC P-256/P-384/P-521, RSA or Ed25519 keys, "
        f"got {type(key).__name__}",
    )  # fmt: skip


def read_manifest(path: str | os.PathLike, trust_anchors: str | None = None) -> dict:
    """The C2PA check of an image file, as a dict with ``state``:

    - "none": no manifest;
    - "valid": the signature and every hash match (the file is as signed); ``trusted`` says
      whether the certificate chains to `trust_anchors` (PEM CA certificates), ``signer`` who
      signed, ``assertion`` the signed org.fastgen.generation fields, ``created_by_model``
      whether it has the c2pa.created trainedAlgorithmicMedia action;
    - "invalid": something changed since signing (``detail``: c2pa's failure codes);
    - "unchecked": a manifest is there but the [provenance] extra is not installed.
    """
    data = Path(path).read_bytes()
    if missing("c2pa"):
        if b"c2pa" in data and (b"jumb" in data or b"caBX" in data):
            return {"state": "unchecked", "detail": f"it has a C2PA manifest, but {EXTRA} "
                    f'to check it: pip install ".[provenance]"'}  # fmt: skip
        return {"state": "none"}
    import c2pa
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        mime = MIME_TYPES.get(image.format or "", "image/png")
    try:
        reader = c2pa.Reader.try_create(mime, io.BytesIO(data), context=c2pa_context(trust_anchors))
    except c2pa.C2paError as exc:  # a manifest too damaged to read
        return {"state": "invalid", "detail": one_line(exc)}
    if reader is None:
        return {"state": "none"}
    with reader:
        state = reader.get_validation_state()
        results = reader.get_validation_results() or {}
        active = reader.get_active_manifest() or {}
    failures = [
        item.get("code", "?")
        for item in results.get("activeManifest", {}).get("failure", [])
        if item.get("code") != "signingCredential.untrusted"  # reported as `trusted`
    ]
    if state not in ("Valid", "Trusted") or failures:
        return {"state": "invalid", "detail": ", ".join(failures) or f"validation state {state}"}
    assertions = {a.get("label"): a.get("data") for a in active.get("assertions", [])}
    actions = assertions.get("c2pa.actions.v2") or assertions.get("c2pa.actions") or {}
    created = any(
        action.get("action") == "c2pa.created"
        and action.get("digitalSourceType") == DIGITAL_SOURCE_TYPE
        for action in actions.get("actions", [])
    )
    info = active.get("signature_info", {})
    return {
        "state": "valid",
        "trusted": state == "Trusted",
        "signer": f"{info.get('common_name', '?')} (issuer: {info.get('issuer', '?')})",
        "claim_generator": [g.get("name") for g in active.get("claim_generator_info", [])],
        "created_by_model": created,
        "assertion": assertions.get(ASSERTION),
    }
