"""CLI: ``mail-proxy`` (:mod:`.main`), ``serve`` and the helpers every plugin's commands share.

The helpers are standard library only (no aiohttp, no database driver), so importing them keeps
``mail-proxy --help`` fast:

- :mod:`.errors`: :class:`CliError` (exit 1) and :class:`UsageError` (exit 2);
- :mod:`.home`: ``GMP_HOME``, instance directories, config file, pid file, the ``use`` context;
- :mod:`.target`: the instance and tenant the command line named;
- :mod:`.rest`: a small REST client speaking to a running instance with its token;
- :mod:`.output`: tables, JSON, progress;
- :mod:`.prompt`: interactive prompts that refuse to prompt without a terminal.
"""
