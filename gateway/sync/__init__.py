"""data_sync_status tracking: per entity and external system, the outcome of each sync.

model (records, statuses, the state machine; pure) · store (all SQL) · recorder (batched
writes from the proxy and the delivery loop) · traffic (outcomes of proxied calls) ·
webhooks (outcomes of webhook deliveries) · api + openapi (admin API).
"""
