"""``python -m epiformer.cli``: the epiformer command."""
import sys

from epiformer.cli import main

sys.exit(main())
