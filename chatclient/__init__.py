"""The terminal client: protocol bookkeeping (pure), the link to gateways, the UI."""
