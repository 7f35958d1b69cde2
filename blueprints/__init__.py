"""HTTP entry points: the proxy, the admin API, system endpoints and CLI commands."""
