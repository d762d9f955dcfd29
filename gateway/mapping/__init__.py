"""ID translation between external systems and internal ids (integration_mappings). Lands with issue 4."""
