"""The plugin's commands: ``mail-proxy bounce parse`` (:mod:`.parse`, no instance needed),
``mail-proxy NAME bounce show|set|test`` (:mod:`.mailbox`) and ``mail-proxy NAME [TENANT]
suppressions list|add|remove`` (:mod:`.suppressions`). The instance commands are REST calls
with the instance's admin token, so the server's validation applies unchanged."""
