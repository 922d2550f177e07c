"""The PyRPL backend's own link to the board's ``monitor_server``: a register client with a
deadline per request (:mod:`.client`) and its typed failures (:mod:`.errors`)."""
