"""IMAP mailbox polling kit shared by the plugins that read mail (delivery notices, receipts)."""
