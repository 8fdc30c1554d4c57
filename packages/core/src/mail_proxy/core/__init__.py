"""genro-mail-proxy core: the framework every plugin builds on.

Start reading at :mod:`mail_proxy.core.hookspecs` (the list of hooks), then
:mod:`mail_proxy.core.plugins` (how plugins are found), :mod:`mail_proxy.core.app`
(the aiohttp application) and :mod:`mail_proxy.core.dispatcher` (how mail leaves).
"""

__version__ = "0.1.0"
