"""The PyRPL backend's own link to the board's ``monitor_server``: a register client with a
deadline per request (:mod:`.client`), its typed failures (:mod:`.errors`), the client PyRPL's
modules hold across reconnections, with its write gate (:mod:`.link`), the look at the board over
ssh that tells a reboot or another program's client apart (:mod:`.probe`), the recovery of a
lost link, one bounded step at a time (:mod:`.recovery`), and the keeper of the link's state,
heartbeat, recovery and FPGA-reset detection, which the backend delegates to (:mod:`.keeper`)."""
