"""The machine-readable marks every image fastgen writes carries: one XMP packet.

The packet holds, in standard vocabularies that other readers recognise:

  Iptc4xmpExt:DigitalSourceType  http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia
                                 (IPTC's term, also C2PA's, for "created by a trained model")
  xmp:CreatorTool                "fastgen <version>" (the software agent)

and, in fastgen's own namespace (``urn:fastgen:provenance:1#``, prefix ``fastgen``), what made
the image and how to make it again: ``fastgen.provenance.record`` lists the fields (checkpoint
sha256, run id, step, EMA or raw weights, seed, number of images, grid layout, class,
interpolation, index, device, CPU convolution policy).

PNG carries the packet in an iTXt chunk keyed ``XML:com.adobe.xmp`` (the XMP specification's
place for it), JPEG in its APP1 XMP segment and WebP in its XMP chunk, as Pillow writes them.
Metadata is a claim, not a proof: anyone can strip it or write it (README, "Provenance").
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from xml.sax.saxutils import quoteattr

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
PNG_XMP_KEY = "XML:com.adobe.xmp"  # the iTXt keyword the XMP specification gives PNG

RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
IPTC_EXT_NS = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
XMP_NS = "http://ns.adobe.com/xap/1.0/"
FASTGEN_NS = "urn:fastgen:provenance:1#"

# Keys of the dict that read_marks returns for the two standard properties.
SOURCE_TYPE = "digital_source_type"
SOFTWARE_AGENT = "software_agent"

# The formats whose files carry the packet, by suffix.
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def software_agent() -> str:
    import fastgen

    return f"fastgen {fastgen.__version__}"


def xmp_packet(fields: Mapping[str, object]) -> str:
    """The XMP packet (a UTF-8 string) marking an image as made by fastgen: the IPTC digital
    source type, fastgen as the creator tool, and `fields` (name -> value; None values are
    left out) as ``fastgen:<name>`` properties.

    Args:
        fields: names made of letters, digits and underscores; values written with str().
    Returns:
        The packet, wrapped in ``<?xpacket?>`` markers as the XMP specification asks.
    """
    properties = [
        f"Iptc4xmpExt:DigitalSourceType={quoteattr(DIGITAL_SOURCE_TYPE)}",
        f"xmp:CreatorTool={quoteattr(software_agent())}",
    ]
    for name, value in fields.items():
        if not name.replace("_", "").isalnum():
            raise ValueError(
                f"fastgen.provenance.xmp_packet: field names are letters, digits and "
                f"underscores, got {name!r}"
            )
        if value is not None:
            properties.append(f"fastgen:{name}={quoteattr(str(value))}")
    attributes = "\n    ".join(properties)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        f' <rdf:RDF xmlns:rdf="{RDF_NS}">\n'
        f'  <rdf:Description rdf:about=""\n'
        f'    xmlns:Iptc4xmpExt="{IPTC_EXT_NS}"\n'
        f'    xmlns:xmp="{XMP_NS}"\n'
        f'    xmlns:fastgen="{FASTGEN_NS}"\n'
        f"    {attributes}/>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="r"?>'
    )


def parse_xmp(packet: str | bytes) -> dict[str, str] | None:
    """The marks of an XMP packet: ``digital_source_type`` and ``software_agent`` where
    present, and every ``fastgen:`` property by its name; None when the packet holds none of
    them (another tool's XMP) or is not XML."""
    if isinstance(packet, bytes):
        packet = packet.decode("utf-8", errors="replace")
    body = packet[packet.find("<x:xmpmeta") :] if "<x:xmpmeta" in packet else packet
    body = body[: body.rfind("</x:xmpmeta>") + len("</x:xmpmeta>")]
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    marks: dict[str, str] = {}
    for description in root.iter(f"{{{RDF_NS}}}Description"):
        # properties as attributes (as fastgen writes them) or as child elements (as other
        # XMP writers may rewrite them)
        items = list(description.attrib.items())
        items += [(child.tag, (child.text or "").strip()) for child in description]
        for tag, value in items:
            if tag == f"{{{IPTC_EXT_NS}}}DigitalSourceType":
                marks[SOURCE_TYPE] = value
            elif tag == f"{{{XMP_NS}}}CreatorTool":
                marks[SOFTWARE_AGENT] = value
            elif tag.startswith(f"{{{FASTGEN_NS}}}"):
                marks[tag[len(FASTGEN_NS) + 2 :]] = value
    return marks or None


def save_options(image_format: str, packet: str | None) -> dict:
    """Pillow ``Image.save`` keyword arguments that embed `packet` (None: nothing) in a file
    of `image_format` ("PNG", "JPEG" or "WEBP")."""
    from PIL import PngImagePlugin

    if image_format == "PNG":
        info = PngImagePlugin.PngInfo()
        if packet is not None:
            info.add_itxt(PNG_XMP_KEY, packet)
        return {"pnginfo": info}
    return {} if packet is None else {"xmp": packet.encode("utf-8")}


def read_xmp(path: str | os.PathLike) -> str | None:
    """The XMP packet of an image file (PNG iTXt/tEXt, JPEG APP1, WebP XMP chunk), or None."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()  # PNG chunks after the image data are read only now
        info = image.info
        packet = info.get(PNG_XMP_KEY) or info.get("xmp")
    if isinstance(packet, bytes):
        packet = packet.decode("utf-8", errors="replace")
    return packet or None


def read_marks(path: str | os.PathLike) -> dict[str, str] | None:
    """The marks of an image file (parse_xmp of its XMP packet), or None without any."""
    packet = read_xmp(path)
    return None if packet is None else parse_xmp(packet)
