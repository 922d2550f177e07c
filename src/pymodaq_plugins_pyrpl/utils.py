"""PyMoDAQ configuration of the plugin package (``config_pyrpl.toml``)."""
from pathlib import Path

from pymodaq_utils.config import BaseConfig, GlobalConfig


@GlobalConfig.register()
class Config(BaseConfig):
    """Plugin configuration: server address, default board hostname, timeouts."""

    config_template_path = Path(__file__).parent.joinpath("resources/config_template.toml")
    config_name = f"config_{__package__.split('pymodaq_plugins_')[1]}"
