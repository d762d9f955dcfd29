"""The admin REST API of the tenant itself: tenant, API keys and the audit trail (api.py),
and their OpenAPI paths (openapi.py). Authentication and roles live in gateway.auth."""
