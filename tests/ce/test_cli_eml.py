"""RFC 5322 files → add-messages entries (``mail_proxy.ce.cli.eml``), with real stdlib parsing."""

from __future__ import annotations

import base64
from email.message import EmailMessage

import pytest

from mail_proxy.ce.cli.eml import EmlError, message_from_eml, message_id_to_id


def build(**headers: str) -> EmailMessage:
    m = EmailMessage()
    for name, value in headers.items():
        m[name.replace("_", "-")] = value
    return m


def test_addresses_subject_headers_and_alternative_bodies() -> None:
    m = build(
        From="Désiré <d@example.com>",
        To='a@example.com, "Bee, B." <b@example.com>',
        Cc="c@example.com",
        Bcc="hidden@example.com",
        Reply_To="r@example.com",
        Subject="Prix: 10 €",
        Message_ID="<abc@host.example>",
        X_Campaign="spring",
        Date="Mon, 1 Jan 2024 00:00:00 +0000",
        Received="from relay by mx",
    )
    m["Return-Path"] = "<bounce@example.com>"
    m.set_content("plain €")
    m.add_alternative("<p>html €</p>", subtype="html")
    out = message_from_eml(bytes(m))
    assert out["from"] == "Désiré <d@example.com>"
    assert out["to"] == ["a@example.com", '"Bee, B." <b@example.com>']
    assert out["cc"] == ["c@example.com"] and out["bcc"] == ["hidden@example.com"]
    assert out["reply_to"] == "r@example.com"
    assert out["subject"] == "Prix: 10 €"
    assert out["message_id"] == "<abc@host.example>"
    assert out["body"].strip() == "plain €" and out["body_html"].strip() == "<p>html €</p>"
    assert "content_type" not in out
    # extra headers are copied; trace, date and MIME headers are not
    assert out["headers"] == {"X-Campaign": "spring"}
    assert "attachments" not in out


def test_html_only_and_plain_only() -> None:
    m = build(From="f@example.com", To="t@example.com", Subject="h")
    m.set_content("<b>hi</b>", subtype="html")
    out = message_from_eml(bytes(m))
    assert out["content_type"] == "html" and out["body"].strip() == "<b>hi</b>"
    assert "body_html" not in out
    m = build(From="f@example.com", To="t@example.com", Subject="p")
    m.set_content("just text")
    out = message_from_eml(bytes(m))
    assert out["body"].strip() == "just text" and "content_type" not in out


def test_attachments_become_base64_entries() -> None:
    m = build(From="f@example.com", To="t@example.com", Subject="files")
    m.set_content("see attached")
    data = bytes(range(256))
    m.add_attachment(data, maintype="application", subtype="octet-stream", filename="raw.bin")
    inner = build(From="x@example.com", To="y@example.com", Subject="forwarded")
    inner.set_content("inner body")
    m.add_attachment(inner)
    out = message_from_eml(bytes(m))
    first, second = out["attachments"]
    assert first == {
        "filename": "raw.bin",
        "storage_path": base64.b64encode(data).decode(),
        "fetch_mode": "base64",
        "mime_type": "application/octet-stream",
    }
    assert second["mime_type"] == "message/rfc822"
    assert b"inner body" in base64.b64decode(second["storage_path"])
    assert second["filename"] == "attachment-2"
    assert out["body"].strip() == "see attached"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"To: t@example.com\nSubject: s\n\nbody\n", "no From header"),
        (b"From: f@example.com\nSubject: s\n\nbody\n", "no To header"),
        (b"From: f@example.com\nTo: undisclosed-recipients:;\n\nbody\n", "no To header"),
    ],
)
def test_files_that_cannot_be_sent(raw: bytes, reason: str) -> None:
    with pytest.raises(EmlError, match=reason):
        message_from_eml(raw)


def test_minimal_file_and_message_id_to_id() -> None:
    out = message_from_eml(b"From: f@example.com\nTo: t@example.com\n\nhello\n")
    assert out == {
        "from": "f@example.com",
        "to": ["t@example.com"],
        "subject": "",
        "body": "hello\n",
    }
    assert message_id_to_id(" <abc@host> ") == "abc@host"
