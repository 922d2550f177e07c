"""``python -m pymodaq_plugins_pyrpl.virtual_board``: ``pymodaq-pyrpl virtual-board`` without the
other commands' imports (see :mod:`.command`)."""
import sys

from .command import main

sys.exit(main())
