"""``python -m mcustt``"""

from mcustt.cli import main

main()
