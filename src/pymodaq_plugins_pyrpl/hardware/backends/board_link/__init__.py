"""The PyRPL backend's own link to the board's ``monitor_server``: a register client with a
deadline per request (:mod:`.client`), its typed failures (:mod:`.errors`), and the look at the
board over ssh that tells a reboot or another program's client apart (:mod:`.probe`)."""
