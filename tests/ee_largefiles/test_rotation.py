"""Key rotation reaches the plugin's own sealed values (the link-signing secret, the kept
storage credentials): re-encrypted with the new key, and links made before still work."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from ee_largefiles.lf import MB, LargeFilesApp, bodies, fetch, links, md5_of

from mail_proxy.core.engine.encryption import Cipher, generate_key, parse_key
from mail_proxy.ee.largefiles.records import secret_place, store_place
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
        secret, name = (
            await conn.execute(sa.text("SELECT value_enc, name FROM largefiles_secrets"))
        ).one()
        options, tenant_id, key = (
            await conn.execute(
                sa.text("SELECT options_enc, tenant_id, url_hash FROM largefiles_stores")
            )
        ).one()
    assert len(new.decrypt(secret, secret_place(name))) >= 43
    assert new.decrypt(options, store_place(tenant_id, key)) == '{"auto_mkdir": true}'

    status, _h, data = await fetch(url)
    assert status == 200 and md5_of(data) == digest
