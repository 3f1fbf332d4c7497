"""The line protocol of the contract (telnet, `client.py`): bytes <-> core."""
