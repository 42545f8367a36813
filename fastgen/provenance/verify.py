"""What an image's provenance proves: its marks, its C2PA manifest, and regeneration.

``verify_image(path, checkpoint=None)`` checks each layer that the image has:

- the XMP marks (fastgen.provenance.marks): a claim that anyone can write or strip;
- the C2PA manifest (fastgen.provenance.signing): valid (the file is as the holder of the
  signing key wrote it; trusted when its chain ends in one of the trust anchors given),
  invalid (pixels, marks or manifest changed since signing), or none;
- with a checkpoint, regeneration (fastgen.provenance.regenerate): the recorded sampling
  run again. On the device kind the marks record, the pixels must be equal bit for bit; on
  another kind each 8-bit level may differ by CROSS_DEVICE_LEVELS (see below).

The image is VERIFIED when every check it has passes and at least one of them is a proof
(a valid signature or an exact regeneration), NOT_VERIFIED when one fails or nothing
beyond the marks could be checked, and NO_PROVENANCE when it has neither marks nor a manifest
(stripped metadata reads the same as an image fastgen never made).
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastgen.provenance.marks import DIGITAL_SOURCE_TYPE, SOURCE_TYPE, read_marks
from fastgen.utils.errors import one_line

VERIFIED, NOT_VERIFIED, NO_PROVENANCE = "verified", "not verified", "no provenance"
EXIT_CODES = {VERIFIED: 0, NOT_VERIFIED: 1, NO_PROVENANCE: 3}

# Across device kinds (a CPU and a GPU, two GPU models, two CPU kernel copies) the same float32
# network rounds differently: other convolution algorithms (Winograd on fastgen's CPU path,
# cuDNN's choice on a GPU, TF32 where it is on), other summation orders. The differences are
# a few float32 ulps per layer; a pixel's 8-bit level changes only where a value lies that
# close to a rounding boundary of the level, by one level, occasionally two after tanh's
# steepest part. Not yet measured on a GPU in this project (no GPU run so far).
CROSS_DEVICE_LEVELS = 2


@dataclass
class Verification:
    """One image's verdict: `status` (VERIFIED, NOT_VERIFIED, NO_PROVENANCE), the `marks`
    found (None: none), the C2PA `manifest` check, the `regeneration` check and the `reasons`
    (one sentence each) behind the status."""

    path: str
    status: str
    marks: dict | None
    manifest: dict
    regeneration: dict
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def verify_image(
    path: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    *,
    device="cpu",
    trust_anchors: str | None = None,
) -> Verification:
    """Checks one image's provenance (see the module docstring).

    Args:
        path: a PNG, JPEG or WebP file.
        checkpoint: the checkpoint the image claims to come from; regenerates it when given.
        device: where to regenerate it.
        trust_anchors: PEM CA certificates a signature must chain to (None: any valid one).
    Returns:
        A Verification. Raises FileNotFoundError for a missing file.
    """
    from fastgen.provenance.signing import read_manifest

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fastgen.provenance.verify_image: no file at {path}")
    fails: list[str] = []
    proofs: list[str] = []
    try:
        marks = read_marks(path)
    except Exception as exc:  # Pillow's errors for a file that is no image it can read
        result = Verification(str(path), NO_PROVENANCE, None, {"state": "none"}, _not_run(""))
        result.reasons.append(f"not an image fastgen can read: {one_line(exc)}")
        return result
    manifest = read_manifest(path, trust_anchors)
    if marks is None and manifest["state"] == "none":
        return Verification(
            str(path), NO_PROVENANCE, None, manifest, _not_run("no provenance to regenerate from"),
            ["no provenance found: no XMP marks and no C2PA manifest (metadata may have been "
             "stripped, or the image was never marked)"],
        )  # fmt: skip
    if marks is not None and marks.get(SOURCE_TYPE) != DIGITAL_SOURCE_TYPE:
        fails.append(f"the marks' digital source type is {marks.get(SOURCE_TYPE)!r}")
    _check_manifest(manifest, marks, trust_anchors, fails, proofs)
    record = marks if marks is not None else manifest.get("assertion") or {}
    if checkpoint is None:
        regeneration = _not_run("no --checkpoint given")
    else:
        regeneration = _regenerate(path, record, checkpoint, device)
        if regeneration["state"] == "reproduced":
            proofs.append("regeneration")
        else:
            fails.append(f"regeneration: {regeneration['detail']}")
    if fails:
        status, reasons = NOT_VERIFIED, fails
    elif proofs:
        status, reasons = VERIFIED, [f"proved by: {', '.join(proofs)}"]
    else:
        status = NOT_VERIFIED
        reasons = ["marked, but nothing checks the marks: no C2PA signature and no --checkpoint "
                   "to regenerate from (anyone can write marks)"]  # fmt: skip
    return Verification(str(path), status, marks, manifest, regeneration, reasons)


def _not_run(why: str) -> dict:
    return {"state": "not run", "detail": why}


def _check_manifest(manifest: dict, marks, trust_anchors, fails: list, proofs: list) -> None:
    state = manifest["state"]
    if state == "unchecked":
        fails.append(manifest["detail"])
    elif state == "invalid":
        fails.append(f"the C2PA manifest is invalid (changed since signing): {manifest['detail']}")
    elif state == "valid":
        if trust_anchors and not manifest.get("trusted"):
            fails.append("the C2PA signature is valid but its certificate does not chain to the "
                         "trust anchors given")  # fmt: skip
        elif not manifest.get("created_by_model"):
            fails.append("the C2PA manifest has no c2pa.created action of trainedAlgorithmicMedia")
        elif marks is not None and manifest.get("assertion") not in (None, _fields(marks)):
            fails.append("the signed assertion and the XMP marks disagree")
        else:
            proofs.append("C2PA signature" + (" (trusted)" if manifest.get("trusted") else ""))


def _fields(marks: dict) -> dict:
    """The marks' fastgen fields (the signed assertion holds these)."""
    from fastgen.provenance.marks import SOFTWARE_AGENT

    return {k: v for k, v in marks.items() if k not in (SOURCE_TYPE, SOFTWARE_AGENT)}


def _regenerate(path: Path, record: dict, checkpoint, device) -> dict:
    import numpy as np

    from fastgen.checkpoint_io import CheckpointError
    from fastgen.models.loading import load_model
    from fastgen.provenance.record import device_kind, file_sha256
    from fastgen.provenance.regenerate import NotRegenerable, regenerate

    recorded = record.get("checkpoint_sha256")
    if recorded is not None and recorded != file_sha256(checkpoint):
        return {"state": "differs", "detail": f"{checkpoint} is not the checkpoint recorded "
                f"(sha256 {file_sha256(checkpoint)[:16]}..., recorded {recorded[:16]}...)"}  # fmt: skip
    try:
        if recorded is None:  # a training grid: the run and step name the weights
            loaded = load_model(checkpoint)
            for name, value in (("run_id", loaded.run_id), ("step", loaded.step)):
                if record.get(name) != str(value):
                    return {"state": "differs", "detail": f"{checkpoint} has {name} {value}, the "
                            f"image was made at {name} {record.get(name)}"}  # fmt: skip
        expected = regenerate(record, checkpoint, device)
    except (NotRegenerable, CheckpointError) as exc:
        return {"state": "not possible", "detail": one_line(exc)}
    actual, expected = _file_pixels(path, expected)
    if actual.shape != expected.shape:
        return {"state": "differs", "detail": f"the image is {actual.shape[1]}x{actual.shape[0]}, "
                f"regeneration made {expected.shape[1]}x{expected.shape[0]}"}  # fmt: skip
    difference = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    same_kind = record.get("device") == device_kind(device)
    allowed = 0 if same_kind else CROSS_DEVICE_LEVELS
    result = {
        "max_difference": int(difference.max()),
        "differing_values": int((difference > 0).sum()),
        "tolerance": allowed,
        "device": device_kind(device),
        "recorded_device": record.get("device"),
    }
    if result["max_difference"] <= allowed:
        how = "bit for bit" if result["max_difference"] == 0 else f"within {allowed} levels"
        return {"state": "reproduced", "detail": f"the pixels were computed again, {how}", **result}
    return {"state": "differs", "detail": f"{result['differing_values']} values differ, by up to "
            f"{result['max_difference']} levels (allowed: {allowed})", **result}  # fmt: skip


def _file_pixels(path: Path, expected):
    """(the file's pixels [H, W, C], the `expected` pixels as the file would hold them): a JPEG
    holds the decoder's output of them (lossy), a WebP grey levels as RGB."""
    import numpy as np
    from PIL import Image

    from fastgen.utils.images import ENCODER_OPTIONS

    with Image.open(path) as image:
        image_format = image.format
        actual = np.asarray(image)
    if image_format == "JPEG":
        buffer = io.BytesIO()
        squeezed = expected[..., 0] if expected.shape[-1] == 1 else expected
        Image.fromarray(squeezed).save(buffer, format="JPEG", **ENCODER_OPTIONS["JPEG"])
        expected = np.asarray(Image.open(buffer)).reshape(expected.shape)
    actual = actual[..., None] if actual.ndim == 2 else actual
    if actual.shape[-1] == 3 and expected.shape[-1] == 1:  # WebP stores grey as RGB
        expected = np.repeat(expected, 3, axis=-1)
    return actual, expected


def exit_code(results: list[Verification]) -> int:
    """0 when every image is verified; 1 when any is not verified; else 3 (some image has no
    provenance)."""
    statuses = {result.status for result in results}
    if NOT_VERIFIED in statuses:
        return EXIT_CODES[NOT_VERIFIED]
    if NO_PROVENANCE in statuses:
        return EXIT_CODES[NO_PROVENANCE]
    return EXIT_CODES[VERIFIED]
