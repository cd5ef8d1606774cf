import sys

from .cli import main

if __name__ == "__main__":  # not when a tool imports the module (pytest --doctest-modules)
    sys.exit(main())
