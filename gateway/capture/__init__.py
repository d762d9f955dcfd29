"""Request/response capture into api_logs.

Records and redaction, the batching COPY writer, its journal, daily partitions.
"""
