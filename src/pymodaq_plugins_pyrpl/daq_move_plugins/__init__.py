import importlib
from pathlib import Path

from pymodaq_utils.logger import set_logger

logger = set_logger(__name__, add_to_console=False)

# PyMoDAQ's plugin discovery reads the module-level variable ``path`` this loop leaves behind.
path = Path(__file__)
for path in Path(__file__).parent.iterdir():
    try:
        if "__init__" not in str(path) and path.suffix == ".py":
            importlib.import_module("." + path.stem, __package__)
    except Exception as e:  # a broken plugin must not hide the others
        logger.warning(f"{path.stem} plugin couldn't be loaded due to some missing packages or errors: {e}")
