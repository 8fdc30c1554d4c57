"""Engine: the runtime and what runs inside it (dispatcher, reporter, attachments, MIME, retry, metrics)."""
