"""Key rotation reaches the plugin's own sealed values (the link-signing secret, the kept
storage credentials): re-encrypted with the new key, and links made before still work."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from ee_largefiles.lf import MB, LargeFilesApp, bodies, fetch, links, md5_of

from mail_proxy.core.engine.encryption import Cipher, generate_key, parse_key
from support.ce_api import message


async def test_rotation_reencrypts_the_plugin_secrets(lf: LargeFilesApp, tmp_path: Path) -> None:
    await lf.configure(
        max_size_mb=1,
        action="rewrite",
        storage_url=f"file://{tmp_path / 'store'}",
        storage_options={"auto_mkdir": True},
        public_base_url=lf.url,
    )
    path, digest = lf.file("a.bin", 2 * MB)
    got = await lf.deliver(
        message("k-1", attachments=[{"filename": "a.bin", "storage_path": path}])
    )
    assert got is not None
    [url] = links(bodies(got)["plain"])

    new_key = generate_key()
    rotated = await lf.api.post("/instance/rotate-key", {"new_key": new_key})
    assert rotated["reencrypted"] >= 3  # the setting's options, the kept options, the secret
    new = Cipher(parse_key(new_key))
    async with lf.runtime.storage.database.connect() as conn:
        secret = await conn.scalar(sa.text("SELECT value_enc FROM largefiles_secrets"))
        options = await conn.scalar(sa.text("SELECT options_enc FROM largefiles_stores"))
    assert len(new.decrypt(secret)) >= 43
    assert new.decrypt(options) == '{"auto_mkdir": true}'

    status, _h, data = await fetch(url)
    assert status == 200 and md5_of(data) == digest
