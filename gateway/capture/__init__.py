"""Request/response capture into api_logs: records, redaction, the COPY writer, journal, partitions."""
