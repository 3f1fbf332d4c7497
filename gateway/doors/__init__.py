"""Doors: protocol adapters between a transport and the chat core."""
