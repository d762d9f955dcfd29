"""Outbound webhooks: subscriptions, the events outbox, the in-process delivery loop.

model (records, statuses) · inputs + api + openapi (admin API) · store (all SQL) ·
delivery (the loop) · policy (retries) · payload (body, signing, translate/sync hooks) ·
ssrf (address guard) · emit (events from routes.yaml). See docs/webhooks.md.
"""
