"""Integration Hub gateway: reverse proxy, request capture, webhooks for a hotel PMS."""
