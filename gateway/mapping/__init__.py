"""ID translation, external ids <-> internal ids (integration_mappings). Lands with issue 4."""
