"""`python -m offload`: the same CLI as the `offload` command."""

from offload.cli import main

main(prog_name="offload")
