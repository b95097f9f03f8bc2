"""`python -m devstack [CONFIG]` (what `make run` runs): the whole local stack in the foreground."""

from devstack.stack import main

main()
