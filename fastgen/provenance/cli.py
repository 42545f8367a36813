"""`fastgen verify`, and the provenance options of `fastgen sample`.

    fastgen verify IMAGE... [--checkpoint CKPT] [--trust-anchors CA.pem] [--device D] [--json]

One line per image (its status and why; then what the marks, the C2PA manifest and the
regeneration found), or one JSON object per image with --json. Exit status: 0 every image
verified, 1 some image not verified (a check failed, or nothing but the marks to go by),
3 some image has no provenance (none was found), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os


def add_sample_options(p: argparse.ArgumentParser) -> None:
    """--separate, --no-provenance, --sign-cert, --sign-key of `fastgen sample`."""
    p.add_argument(
        "--separate", action="store_true",
        help="also write each image alone: OUT's name + _0000, _0001, ... (marked with its index)",
    )  # fmt: skip
    p.add_argument(
        "--no-provenance", dest="provenance", action="store_false",
        help="leave out the XMP marks (AI-generated, checkpoint, sampling arguments)",
    )  # fmt: skip
    p.add_argument(
        "--sign-cert", default=None, metavar="CHAIN.pem",
        help="sign each image (C2PA) with this certificate chain; default: $FASTGEN_SIGN_CERT",
    )  # fmt: skip
    p.add_argument(
        "--sign-key", default=None, metavar="KEY.pem",
        help="the signing certificate's private key; default: $FASTGEN_SIGN_KEY",
    )  # fmt: skip


def signer_from_options(args: argparse.Namespace):
    """The Signer that --sign-cert/--sign-key (or FASTGEN_SIGN_CERT/FASTGEN_SIGN_KEY) ask for,
    checked before any image is written, or None. Errors name the flag or variable."""
    from fastgen.provenance.signing import Signer
    from fastgen.utils.errors import ArgumentError

    cert = args.sign_cert or os.environ.get("FASTGEN_SIGN_CERT") or None
    key = args.sign_key or os.environ.get("FASTGEN_SIGN_KEY") or None
    if cert is None and key is None:
        return None
    if not args.provenance:
        raise ValueError("--no-provenance contradicts signing (--sign-cert/--sign-key or "
                         "FASTGEN_SIGN_CERT/FASTGEN_SIGN_KEY): give one")  # fmt: skip
    if cert is None or key is None:
        raise ValueError("signing needs both a certificate chain and its key: --sign-cert and "
                         "--sign-key (or FASTGEN_SIGN_CERT and FASTGEN_SIGN_KEY)")  # fmt: skip
    try:
        return Signer.from_files(cert, key)
    except ArgumentError as err:
        flag = {"sign_cert": args.sign_cert, "sign_key": args.sign_key}.get(err.argument)
        if flag is None:  # the value came from the environment: name the variable
            raise ValueError(f"FASTGEN_{err.argument.upper()} {err.problem}") from None
        raise


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = ("exit status: 0 every image verified, 1 some image not verified, 3 some image "
                "has no provenance, 2 a usage error")  # fmt: skip
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG or WebP files")
    p.add_argument(
        "--checkpoint", default=None, metavar="CKPT",
        help="regenerate each image from this checkpoint (or run folder: its newest) and compare",
    )  # fmt: skip
    p.add_argument(
        "--trust-anchors", default=None, metavar="CA.pem",
        help="PEM CA certificates a C2PA signature must chain to (default: any valid signature)",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", help="where to regenerate: cpu (default), cuda[:N]")
    p.add_argument("--json", action="store_true", help="one JSON object per image")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fastgen.checkpoint_io import checkpoint_file
    from fastgen.provenance.verify import exit_code, verify_image
    from fastgen.utils.devices import resolve_device

    checkpoint = None if args.checkpoint is None else checkpoint_file(args.checkpoint)
    anchors = None
    if args.trust_anchors is not None:
        anchors = Path(args.trust_anchors).read_text()
    device = str(resolve_device(args.device, "fastgen verify"))
    results = [
        verify_image(image, checkpoint, device=device, trust_anchors=anchors)
        for image in args.images
    ]
    for result in results:
        print(json.dumps(result.to_dict()) if args.json else format_result(result))
    return exit_code(results)


def format_result(result) -> str:
    """`IMAGE: STATUS: reasons`, then a line each for the marks, the manifest and the
    regeneration."""
    lines = [f"{result.path}: {result.status}: {'; '.join(result.reasons)}"]
    marks = result.marks
    if marks is not None:
        shown = ", ".join(
            f"{key} {marks[key]}"
            for key in ("source", "image", "weights", "run_id", "step", "seed", "n", "index")
            if key in marks
        )
        lines.append(f"  marks: AI-generated ({marks.get('software_agent', '?')}); {shown}")
        if "checkpoint_sha256" in marks:
            lines.append(f"  checkpoint sha256: {marks['checkpoint_sha256']}")
    else:
        lines.append("  marks: none")
    manifest = result.manifest
    if manifest["state"] == "valid":
        trust = (
            "trusted" if manifest.get("trusted") else "untrusted: no --trust-anchors it chains to"
        )
        lines.append(f"  C2PA: valid, signed by {manifest['signer']} ({trust})")
    else:
        lines.append(f"  C2PA: {manifest['state']}"
                     + (f" ({manifest['detail']})" if manifest.get("detail") else ""))  # fmt: skip
    regeneration = result.regeneration
    lines.append(f"  regeneration: {regeneration['state']} ({regeneration['detail']})")
    return "\n".join(lines)
