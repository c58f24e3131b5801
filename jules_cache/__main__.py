"""``python -m jules_cache``: the same CLI as the ``jules-cache`` command."""

from jules_cache.cli import main

main()
