"""data_sync_status tracking. Lands with issue 6."""
