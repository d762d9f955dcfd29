"""ID translation: external ids of partner systems ⇄ internal UUIDs (integration_mappings).

store.py (all SQL), cache.py + listener.py (per-process cache, LISTEN/NOTIFY
invalidation), translate.py (pointers, body walk, path/query rewriting; pure),
flow.py (translation in the proxy, auto-mapping), importing.py + api.py (admin API).
"""
