"""Subcommands of ``python -m training.ml``, one module each.

A command module exposes ``register(subparsers)``; it adds its parser(s) and sets
``handler`` with ``parser.set_defaults(handler=run)``. ``run(args)`` returns a dict of
final metrics (printed as ONE JSON line on stdout), an int exit code, or None. Bad input
is reported by raising ``training.ml.data.DataError``, ``training.ml.model_files.ModelLoadError``
or ``training.ml.commands.common.CommandError``: the CLI prints one line and exits 2.
Import torch/transformers inside ``run`` so ``--help`` stays fast.
"""
