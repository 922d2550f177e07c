"""``python -m pymodaq_plugins_pyrpl.hardware.server``: see :mod:`.command`."""
import sys

from .command import main

sys.exit(main())
