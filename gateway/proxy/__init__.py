"""The proxy pipeline, upstream forwarding and WebSocket pass-through."""
