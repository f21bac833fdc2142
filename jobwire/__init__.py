"""The ``jobwire`` command line: the one package above ``broker``, ``client`` and ``bench``.

Each layer owns its commands and imports nothing above itself; this package only puts them under
one parser (``jobwire/cli.py``). It is the one top-level package besides the layers, because the
console script is the one piece of code that must import all of them.
"""
