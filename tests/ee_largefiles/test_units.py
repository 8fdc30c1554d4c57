"""The plugin's pure parts: storage URL checks, declared sizes, the reason texts, the link
block in every body layout (HTML escaped), the download headers."""

from __future__ import annotations

import importlib.util
from email.message import EmailMessage

import pytest
from pydantic import ValidationError

from mail_proxy.core.engine.mime import build_email
from mail_proxy.ee.largefiles.config import (
    LargeFileConfig,
    declared_size,
    over_limit,
    storage_problem,
)
from mail_proxy.ee.largefiles.downloads import content_disposition
from mail_proxy.ee.largefiles.linkblock import Link, add_links

LINK = Link('Q3 <report> & "notes".pdf', 31_457_280, "https://x.test/f?a=1&b=<2>", 1_900_000_000.0)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("nosuch://bucket/x", "unknown storage protocol 'nosuch'"),
        ("https://example.com/files", "https:// storage cannot store files"),
        ("zip://a.zip", "zip:// storage cannot store files"),
        ("file://relative/dir", "a local storage_url needs an absolute path"),
        ("s3://", "s3:// storage_url needs a bucket"),
        ("memory::file:///x", "chained URLs"),
    ],
)
def test_storage_urls_refused_without_reaching_the_storage(url: str, reason: str) -> None:
    problem = storage_problem(url)
    assert problem is not None and reason in problem


def test_a_missing_driver_names_the_extra_to_install() -> None:
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed here")
    assert storage_problem("gs://bucket/prefix") == (
        "gs:// needs its fsspec driver, which is not installed "
        "(pip install 'genro-mail-proxy[large-files-gcs]')"
    )


@pytest.mark.parametrize("url", ["file:///srv/files", "memory://gmp", "s3://bucket/prefix"])
def test_usable_storage_urls(url: str) -> None:
    assert storage_problem(url) is None


def test_config_model_rules() -> None:
    with pytest.raises(ValidationError, match="action 'rewrite' needs a storage_url"):
        LargeFileConfig.model_validate({"action": "rewrite"})
    with pytest.raises(ValidationError, match="public_base_url must be an http"):
        LargeFileConfig.model_validate({"public_base_url": "ftp://x"})
    with pytest.raises(ValidationError):
        LargeFileConfig.model_validate({"max_size_mb": 0})
    with pytest.raises(ValidationError):
        LargeFileConfig.model_validate({"action": "drop"})
    config = LargeFileConfig.model_validate({"max_size_mb": 25})
    assert (config.enabled, config.action, config.file_ttl_days) == (True, "warn", 30.0)
    assert config.limit_bytes == 25 * 1024 * 1024


def test_declared_sizes_and_the_reason_text() -> None:
    assert declared_size({"filename": "a", "storage_path": "/x", "size": 87_241_523}) == 87_241_523
    assert declared_size({"filename": "a", "storage_path": "base64:" + "A" * 400}) == 300
    assert declared_size({"filename": "a", "storage_path": "QUJD", "fetch_mode": "base64"}) == 3
    assert declared_size({"filename": "a", "storage_path": "https://x/y"}) is None
    config = LargeFileConfig(max_size_mb=25)
    assert over_limit(1, 87_241_523, config) == "attachment 1: 83.2 MB is over the 25 MB limit"


def _message(**payload: object) -> EmailMessage:
    base = {"from": "a@example.com", "to": ["b@example.com"], "subject": "s"}
    return build_email({**base, **payload}, message_id="<m@example.com>", mail_id="m")


def _bodies(msg: EmailMessage) -> dict[str, str]:
    return {
        p.get_content_subtype(): p.get_content()
        for p in msg.walk()
        if not p.is_multipart() and p.get_content_type() in ("text/plain", "text/html")
    }


def test_the_block_goes_into_both_bodies_html_escaped() -> None:
    msg = _message(body="Hello", body_html="<html><body><p>Hello</p></body></html>")
    add_links(msg, [LINK], "Files for you:")
    texts = _bodies(msg)
    assert set(texts) == {"plain", "html"}
    assert "Files for you:" in texts["plain"]
    assert (
        'Q3 <report> & "notes".pdf (30.0 MB, until 2030-03-17): https://x.test/f?a=1&b=<2>'
        in (texts["plain"])
    )
    html = texts["html"]
    assert "<report>" not in html and "&lt;report&gt; &amp; &quot;notes&quot;.pdf" in html
    assert 'href="https://x.test/f?a=1&amp;b=&lt;2&gt;"' in html
    assert html.index("gmp-large-files") < html.index("</body>")


@pytest.mark.parametrize(
    ("payload", "only"),
    [
        ({"body": "text only"}, "plain"),
        ({"body": "<p>html only</p>", "content_type": "html"}, "html"),
    ],
)
def test_a_single_body_gets_the_block(payload: dict[str, str], only: str) -> None:
    msg = _message(**payload)
    add_links(msg, [LINK])
    texts = _bodies(msg)
    assert list(texts) == [only]
    assert "Large attachments, available for download:" in texts[only]


def test_content_disposition_keeps_the_exact_name() -> None:
    assert content_disposition('résumé "v2".pdf') == (
        "attachment; filename=\"r_sum_ _v2_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22.pdf"
    )
