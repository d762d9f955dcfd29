"""Scheduled batch sync jobs: routes.yaml ``syncs:`` (config), their tables (store), the
runner that pages a source and posts batches to a target (runner), the admin API (api)."""
