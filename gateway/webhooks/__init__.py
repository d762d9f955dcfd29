"""Outbound webhooks: subscriptions, outbox, delivery loop, signing. Lands with issue 5."""
