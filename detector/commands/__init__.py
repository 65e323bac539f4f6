"""The command-line tools, one module per subcommand of ``detector``.

Each module exposes ``build_parser()`` and ``main(argv) -> int``; :mod:`detector.cli`
dispatches to them and ``tools/*.py`` are thin wrappers around the same entry point.
"""
