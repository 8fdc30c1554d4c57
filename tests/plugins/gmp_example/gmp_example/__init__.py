"""The worked example plugin of docs/plugins.md (entry point ``example``)."""
