"""What the tests share: server subprocesses and raw clients, fault proxies, plugin drivers, waits.

The scripts in ``scripts/`` are run as subprocesses by path, never imported.
"""
