"""``python -m redline``: the command line."""

from redline.cli import main

main()
