"""Scripts the tests run as subprocesses, by path (``python PATH ARGS``): each one's docstring says
what it does and how it is called. They import the package under test only, never the helpers
(the network ones share iptables_rules.py, a sibling module)."""
from __future__ import annotations

from pathlib import Path

_FOLDER = Path(__file__).parent
BOARD_LINK_PROBE = _FOLDER / "board_link_probe.py"
BOARD_NET_DRIVER = _FOLDER / "board_net_driver.py"
DAQ_SCAN_SWEEP = _FOLDER / "daq_scan_sweep.py"
DASHBOARD_QUIT = _FOLDER / "dashboard_quit.py"
HOLDER = _FOLDER / "holder.py"
NET_DRIVER = _FOLDER / "net_driver.py"
PID_REUSE = _FOLDER / "pid_reuse.py"
PYRPL_BACKEND_PROBE = _FOLDER / "pyrpl_backend_probe.py"
PYRPL_CLIENT_PROBE = _FOLDER / "pyrpl_client_probe.py"
PYRPL_NA_SWEEP_PROBE = _FOLDER / "pyrpl_na_sweep_probe.py"
PYRPL_NETWORK_PROBE = _FOLDER / "pyrpl_network_probe.py"
PYRPL_QUANTIZATION_PROBE = _FOLDER / "pyrpl_quantization_probe.py"
PYRPL_SPECTRUM_PROBE = _FOLDER / "pyrpl_spectrum_probe.py"
PYRPL_SSH_PROBE = _FOLDER / "pyrpl_ssh_probe.py"
UNCLOSED_ACQUISITION = _FOLDER / "unclosed_acquisition.py"
