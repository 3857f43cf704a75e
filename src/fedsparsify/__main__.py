"""``python -m fedsparsify``: the same as the ``fedsparsify`` command."""

from fedsparsify.cli import main

main()
