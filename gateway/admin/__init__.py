"""Admin REST API, API-key authentication and roles. Lands with issue 3."""
