"""The FAQ's CLI workflow, word for word, through the real ``mail-proxy`` script.

From an empty GMP_HOME: start an instance, see it in ``list``, create the tenant ``acme``
(multitenancy plugin), give it an SMTP account, send an ``.eml`` with an attachment, see it
arrive at a real SMTP server and listed as ``sent``, stop the instance.

Two deliberate departures from the FAQ text, both for isolation: ``start`` gets an ephemeral
``--port`` (parallel test runs would race for port 8000), and the tenant's ``--base-url`` is a
real report receiver on loopback instead of https://acme.com (tests never leave the machine;
``GMP_FETCH_ALLOW_NETWORKS`` lets the instance report to 127.0.0.1; report delivery itself is
tested in test_reports*.py). CLI calls run in a worker thread so the SMTP server and the report
receiver, in this test's event loop, keep answering.
"""

from __future__ import annotations

import asyncio
import subprocess
from email.message import EmailMessage
from pathlib import Path

from mail_proxy.core.testing.net import free_port
from mail_proxy.core.testing.reports import ReportClient
from mail_proxy.core.testing.smtp import SmtpTestServer
from support.cli_runner import MAIL_PROXY, Cli, Result

ATTACHMENT = bytes(range(256)) * 8  # binary, every byte value


def write_eml(path: Path) -> None:
    m = EmailMessage()
    m["From"] = "ACME Billing <billing@acme.example>"
    m["To"] = "Customer <customer@example.org>"
    m["Subject"] = "Your invoice"
    m["Message-ID"] = "<invoice-1@acme.example>"
    m.set_content("Please find your invoice attached.")
    m.add_attachment(
        ATTACHMENT, maintype="application", subtype="octet-stream", filename="invoice.bin"
    )
    path.write_bytes(bytes(m))


def state_of(listing: str, name: str) -> str:
    """The STATE column of ``name`` in the ``mail-proxy list`` table."""
    header, *rows = listing.splitlines()
    assert header.split()[:2] == ["NAME", "STATE"], listing
    states = {row.split()[0]: row.split()[1] for row in rows}
    return states[name]


async def test_faq_workflow(tmp_path: Path) -> None:
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    cli = Cli(home, GMP_FETCH_ALLOW_NETWORKS="127.0.0.1/32")

    async def mp(*args: str) -> Result:
        return await asyncio.to_thread(cli.ok, *args)

    try:
        async with (
            SmtpTestServer(auth=("mailer", "s3cret"), auth_require_tls=False) as smtp,
            ReportClient() as reports,
        ):
            started = await mp("start", "myserver", "--port", str(free_port()))
            assert "Created instance 'myserver'" in started.out
            assert state_of((await mp("list")).out, "myserver") == "running"

            tenant = await mp(
                "myserver",
                "tenants",
                "add",
                "acme",
                "--name",
                "ACME Corp",
                "--base-url",
                reports.base_url,
                "--sync-path",
                "/mail-proxy/sync",
            )
            assert "tenant 'acme' created" in tenant.out and "API key" in tenant.out

            account = await mp(
                "myserver",
                "acme",
                "accounts",
                "add",
                "acme-smtp",
                "--host",
                "127.0.0.1",
                "--port",
                str(smtp.port),
                "--transport",
                "smtp",
                "--user",
                "mailer",
                "--password",
                "s3cret",
                "--no-use-tls",
                "--no-starttls",
                "--allow-plaintext-auth",  # the test server offers no TLS
                "--timeout",
                "10",
                "--batch-size",
                "10",
                "--limit-per-minute",
                "100",
                "--limit-per-hour",
                "1000",
                "--limit-per-day",
                "10000",
                "--limit-behavior",
                "defer",
                "--default",
            )
            assert "account 'acme-smtp' saved" in account.out
            assert "s3cret" not in account.out

            write_eml(work / "email.eml")
            sent = await asyncio.to_thread(  # relative path, as typed in a shell
                subprocess.run,
                [MAIL_PROXY, "myserver", "acme", "send", "email.eml"],
                cwd=work,
                env=cli.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert sent.returncode == 0, sent.stderr
            assert "queued 1 message(s)" in sent.stdout

            for _ in range(300):
                if smtp.messages:
                    break
                await asyncio.sleep(0.05)
            assert len(smtp.messages) == 1, "the message did not reach the SMTP server"
            received = smtp.messages[0]
            assert received.authenticated_as == "mailer"
            assert received.rcpt_tos == ["customer@example.org"]
            assert str(received.message["Subject"]) == "Your invoice"
            (part,) = list(received.message.iter_attachments())
            assert part.get_filename() == "invoice.bin"
            assert part.get_content() == ATTACHMENT

            listed: list[dict[str, object]] = []
            for _ in range(100):  # the outcome is committed right after the SMTP answer
                listed = (await mp("myserver", "acme", "messages", "list", "--json")).json()[
                    "messages"
                ]
                if listed and listed[0]["status"] == "sent":
                    break
                await asyncio.sleep(0.1)
            assert [m["status"] for m in listed] == ["sent"]
            assert listed[0]["account_id"] == "acme-smtp"

            stopped = await mp("stop", "myserver")
            assert "stopped 'myserver'" in stopped.out
            assert state_of((await mp("list")).out, "myserver") == "stopped"
    finally:
        cli.cleanup()
