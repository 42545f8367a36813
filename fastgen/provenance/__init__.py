"""Provenance of the images fastgen writes: marks that say what they are, signed Content
Credentials, and the check of both.

- ``marks``: the XMP packet every image carries (IPTC digital source type
  trainedAlgorithmicMedia, fastgen as the software agent, the fields of ``record``);
- ``record``: what the marks record (checkpoint, run, step, weights, sampling arguments);
- ``signing``: a C2PA manifest signed with the user's certificate (``Signer``; the
  ``[provenance]`` extra: c2pa-python, cryptography), and reading one back;
- ``regenerate``: an image computed again from its marks and a checkpoint;
- ``verify``: the three layers checked together (``verify_image``), behind ``fastgen verify``.

What each layer proves, and what none can: README, "Provenance".
"""

from fastgen.provenance.marks import DIGITAL_SOURCE_TYPE, read_marks, xmp_packet
from fastgen.provenance.signing import Signer, read_manifest
from fastgen.provenance.verify import Verification, verify_image

__all__ = [
    "DIGITAL_SOURCE_TYPE", "Signer", "Verification", "read_manifest", "read_marks",
    "verify_image", "xmp_packet",
]  # fmt: skip
