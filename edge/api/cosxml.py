"""COS XML documents, both ways, in one place.

Responses are built as `xml.etree.ElementTree` trees, so every piece of client-supplied text
(keys, prefixes, markers, error messages) is escaped by the serializer rather than by hand.
ElementTree does not refuse characters XML 1.0 forbids (C0 controls other than tab, newline
and carriage return; U+FFFE/U+FFFF; lone surrogates): it writes them raw and the document no
longer parses. Text set through `sub` has those characters percent-encoded (`%01`), so a
document the edge sends always parses; no valid key contains them (`validate_key` refuses
control characters), so only names that were never addressable change.

Request bodies (origin configuration, CompleteMultipartUpload) are parsed with
`defusedxml`: a DTD, and so any entity (billion laughs, external entities), is refused, and
`XMLProblem` is raised for anything that is not a well-formed document. COS and S3 clients may
send the S3 namespace (`xmlns="http://s3.amazonaws.com/doc/2006-03-01/"`); tags are reduced to
their local names, so callers match on `CompleteMultipartUpload`, `Part`, `OriginRule`.

The few pieces of COS vocabulary several documents share are spelled here too: the `<Owner>`
element, the timestamp format, and a listed key under `encoding-type=url`.
"""

from __future__ import annotations

import re
import urllib.parse
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from xml.parsers.expat import ExpatError

import defusedxml
import defusedxml.ElementTree as SafeET

DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

# Characters XML 1.0 does not allow in a document at all (§2.2 Char).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


class XMLProblem(ValueError):
    """A request body that is not a well-formed XML document the edge will read."""


def xml_safe(text: str) -> str:
    """`text` with the characters XML cannot carry percent-encoded (`\\x01` -> `%01`)."""
    return _NOT_XML.sub(lambda m: "".join(f"%{b:02X}" for b in _raw(m.group())), text)


def _raw(char: str) -> bytes:
    return char.encode("utf-8", "surrogatepass")


def element(tag: str, text: str | None = None) -> ET.Element:
    """A new element, with `text` made XML-safe."""
    node = ET.Element(tag)
    if text is not None:
        node.text = xml_safe(text)
    return node


def sub(parent: ET.Element, tag: str, text: str | int | None = None) -> ET.Element:
    """Append a child `<tag>text</tag>` to `parent` and return it."""
    node = ET.SubElement(parent, tag)
    if text is not None:
        node.text = xml_safe(str(text))
    return node


def document(root: ET.Element) -> bytes:
    """The UTF-8 bytes of a response document, with the declaration COS sends."""
    return DECLARATION + ET.tostring(root, encoding="unicode").encode("utf-8")


def parse(body: bytes) -> ET.Element:
    """The root of a request body, tags reduced to local names; `XMLProblem` otherwise.

    No DTD is accepted (so no entity can be declared or expanded) and no external resource
    is fetched: a body is judged by its own bytes only.
    """
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True)
    except defusedxml.DefusedXmlException as e:
        reason = type(e).__name__
        raise XMLProblem(f"XML with a DTD or entities is not accepted ({reason})") from None
    except (ET.ParseError, ExpatError, ValueError) as e:
        raise XMLProblem(f"not well-formed XML: {e}") from None
    for node in root.iter():
        if isinstance(node.tag, str):
            node.tag = local_name(node.tag)
    parsed: ET.Element = root
    return parsed


def local_name(tag: str) -> str:
    """`{namespace}Name` -> `Name`."""
    return tag.rpartition("}")[2]


def owner(parent: ET.Element) -> None:
    """Append the `<Owner>` COS lists objects, parts and uploads with: always the edge."""
    node = sub(parent, "Owner")
    sub(node, "ID", "cosedge")
    sub(node, "DisplayName", "cosedge")


def timestamp(seconds: float) -> str:
    """A Unix time as COS's documents write it (`2024-01-02T03:04:05.000Z`)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def listed(text: str, encode: bool) -> str:
    """A key or prefix as a listing shows it: percent-encoded with `encoding-type=url`."""
    return urllib.parse.quote(text, safe="/") if encode else text
