"""genro-mail-proxy Enterprise Edition: large attachments offloaded to object storage."""
