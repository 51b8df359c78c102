"""``python -m bnfold ...`` is the same as the ``bnfold`` command."""

from ._cli import main

main()
