"""``python -m jules_cache``: the same CLI as the ``jules-cache`` command."""

from .cli import main

main()
