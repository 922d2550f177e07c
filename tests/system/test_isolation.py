"""The suite never writes PyMoDAQ's system folder (/etc/.pymodaq), in-process or in subprocesses."""
from __future__ import annotations

import os
import subprocess
import sys


def test_pymodaq_system_config_is_redirected() -> None:
    import pymodaq_utils.config as config

    etc = os.environ["PYMODAQ_PYRPL_TEST_ETC"]
    assert str(config.CONFIG_BASE_PATH) == etc
    child = subprocess.run([sys.executable, "-c",
                            "import pymodaq_utils.config as c; print(c.CONFIG_BASE_PATH)"],
                           capture_output=True, text=True, timeout=60)
    assert child.stdout.strip() == etc, child.stderr
    assert str(config.get_set_local_dir(user=True)).startswith(os.environ["HOME"])
