"""IMAP mailbox polling kit shared by the plugins that read mail (bounces, PEC receipts)."""
