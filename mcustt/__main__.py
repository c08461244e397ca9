"""``python -m mcustt``"""

from mcustt.cli import main

# Guarded: recognizer worker processes are spawned, and a spawned child imports the
# parent's main module; unguarded, each worker would start another server.
if __name__ == "__main__":
    main()
