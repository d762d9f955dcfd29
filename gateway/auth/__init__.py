"""Who is calling: tenants and API keys (their SQL), roles, the authenticator with its key
cache, and per-key rate limits. Foundation: used by the proxy and every admin endpoint."""
