"""The XML codec: documents the SDK parses (declaration, escaping, XML-safe text) and
request bodies read without DTDs or entities, by local names."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from edge.api import cosxml
from edge.api.errors import INVALID_ARGUMENT, error_body
from edge.api.multipart import parse_complete
from edge.api.rules import MalformedRuleXML
from edge.api.rules_xml import parse_origin_xml, render_origin_xml
from edge.store.interface import MultipartError


def test_document_has_cos_declaration_and_escapes():
    """Text with markup characters round-trips; the declaration COS sends comes first."""
    root = cosxml.element("ListBucketResult")
    cosxml.sub(root, "Key", "a&b<c>\"d'")
    body = cosxml.document(root)
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult>')
    assert ET.fromstring(body).findtext("Key") == "a&b<c>\"d'"


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x08", "\x0b", "\x1f", "\ufffe", "\ud800"])
def test_characters_xml_forbids_are_percent_encoded(char):
    """ElementTree writes C0 controls raw (the document would not parse); the codec
    percent-encodes them, so every document parses."""
    root = cosxml.element("Error")
    cosxml.sub(root, "Message", f"bad{char}key")
    parsed = ET.fromstring(cosxml.document(root)).findtext("Message")
    assert parsed is not None and parsed.startswith("bad%") and parsed.endswith("key")


def test_error_body_is_escaped_xml():
    """The error document is built by the codec: a message with markup and control
    characters is still one parseable <Error>."""
    body = error_body(INVALID_ARGUMENT, "host/</Resource>\x01", "id1", "x<y>&\x02")
    root = ET.fromstring(body)
    assert root.findtext("Message") == "x<y>&%02"
    assert root.findtext("Resource") == "host/</Resource>%01"
    assert [c.tag for c in root] == ["Code", "Message", "Resource", "RequestId"]


LAUGHS = (
    b'<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&b;</ETag></Part>"
    b"</CompleteMultipartUpload>"
)


@pytest.mark.parametrize(
    "body",
    [
        LAUGHS,
        b'<!DOCTYPE x SYSTEM "http://127.0.0.1:9/x.dtd"><CompleteMultipartUpload/>',
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><CompleteMultipartUpload>&e;'
        b"</CompleteMultipartUpload>",
        b"<CompleteMultipartUpload>",
        b"",
        b"\xff\xfe",
    ],
)
def test_bad_bodies_are_xml_problems(body):
    """DTDs (so entities of any kind) and ill-formed bytes are refused as XMLProblem, and
    as MalformedXML by both parsers that read request bodies."""
    with pytest.raises(cosxml.XMLProblem):
        cosxml.parse(body)
    with pytest.raises(MultipartError) as info:
        parse_complete(body)
    assert info.value.code == "MalformedXML"
    with pytest.raises(MalformedRuleXML):
        parse_origin_xml(body.replace(b"CompleteMultipartUpload", b"OriginConfiguration"))


def test_namespaced_bodies_match_on_local_names():
    """S3's namespace on CompleteMultipartUpload and OriginConfiguration is accepted."""
    ns = b' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
    complete = (
        b"<CompleteMultipartUpload" + ns + b'><Part><PartNumber>1</PartNumber><ETag>"e"</ETag>'
        b"</Part><Part><PartNumber>2</PartNumber><ETag>f</ETag></Part></CompleteMultipartUpload>"
    )
    assert parse_complete(complete) == [(1, '"e"'), (2, "f")]
    origin = (
        b"<OriginConfiguration" + ns + b"><OriginRule><RulePriority>1</RulePriority>"
        b"<OriginInfo><HostInfo><HostName>abc.qq.com</HostName></HostInfo></OriginInfo>"
        b"</OriginRule></OriginConfiguration>"
    )
    (rule,) = parse_origin_xml(origin)
    assert rule.origin.netloc == "abc.qq.com"
    with pytest.raises(MultipartError):
        parse_complete(b"<Other><Part><PartNumber>1</PartNumber></Part></Other>")


def test_rendered_origin_document_reads_back():
    """GET ?origin's document, in COS's element order, parses back to the same rules."""
    origin = (
        b"<OriginConfiguration><OriginRule><RulePriority>3</RulePriority>"
        b"<OriginType>Redirect</OriginType><OriginCondition><Prefix>a&amp;b/</Prefix>"
        b"</OriginCondition><OriginInfo><HostInfo><HostName>abc.qq.com:81</HostName>"
        b"</HostInfo></OriginInfo></OriginRule></OriginConfiguration>"
    )
    rules = parse_origin_xml(origin)
    body = render_origin_xml(rules)
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<OriginConfiguration>')
    rule = ET.fromstring(body).find("OriginRule")
    assert rule is not None
    assert [c.tag for c in rule] == [
        "RulePriority", "OriginType", "OriginCondition", "OriginParameter", "OriginInfo"
    ]  # fmt: skip
    assert parse_origin_xml(body) == rules
