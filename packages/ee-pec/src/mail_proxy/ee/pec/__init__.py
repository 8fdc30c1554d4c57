"""genro-mail-proxy Enterprise Edition: PEC (Italian certified mail) receipt handling."""
