"""genro-mail-proxy core: the framework every plugin builds on.

Folders by role, each importing only the ones above it in this list:

- ``contracts/``: the data model, settings, errors and the interfaces plugins implement;
- ``plugins/``: the hook specifications (start reading at :mod:`.plugins.hookspecs`), the
  plugin manager, registries;
- ``engine/``: the runtime and what runs in it (:mod:`.engine.dispatcher`: how mail leaves;
  :mod:`.engine.reporter`: how reports reach the client);
- ``web/`` and ``cli/``: the aiohttp application and the ``mail-proxy`` command.
"""

__version__ = "0.1.0"
