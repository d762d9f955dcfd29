"""Erasure of one data subject's personal data (GDPR right to erasure): admin API
``POST /admin/v1/erasures`` and ``gateway erase``. The stores that hold the data each
erase their own tables (capture, webhooks) and mapping resolves the subject's ids; the
app wires them into :class:`gateway.erasure.model.Steps` (features never import each other)."""
