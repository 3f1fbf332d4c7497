"""The gateway: doors (line protocol, ...) over one chat core, fan-out, and the server.

See docs/ARCHITECTURE.md for the layers and who may call whom.
"""
