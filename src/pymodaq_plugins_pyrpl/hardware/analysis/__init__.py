"""The facts of PyRPL's software instruments (network and spectrum analyzers), backend-independent."""
