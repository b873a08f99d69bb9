"""``python -m pacsnode``: the same command line as the ``pacsnode`` script."""

from pacsnode.cli import main

main()
