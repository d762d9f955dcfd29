"""The HTTP toolkit every endpoint uses: JSON answers and errors, the admin endpoint
decorator (authentication, roles, call log hook), input parsing, keyset pagination and the
OpenAPI building blocks. Foundation: imports nothing above it."""
