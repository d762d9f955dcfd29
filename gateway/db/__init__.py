"""Database access: the pool and its codecs, the embedded server, migrations."""
