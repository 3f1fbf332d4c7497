"""The chat's meaning, without sockets: typed commands in, typed events out."""
