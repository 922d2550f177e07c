"""The Qt-free, PyMoDAQ-free core: wire protocol, server, backends, client and server manager."""
