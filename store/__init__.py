"""Everything that touches Redis: key names, Lua scripts, the store, the pub/sub link."""
