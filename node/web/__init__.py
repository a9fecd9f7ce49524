"""The daemon's HTTP side: thin aiohttp handlers that call Node off the event loop.

app.py builds the root application; each API is a sub-application with its
own error format (gateway.py under /ipfs, psa.py under /psa, kubo_rpc.py
under /api/v0). server.py runs it until SIGTERM.
"""
