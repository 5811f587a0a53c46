"""The ``v4stack`` command line: one module per subcommand, wired in ``main``."""
