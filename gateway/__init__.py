"""The network side of the chat: framing, commands, sessions, fan-out, the TCP server."""
