"""A paginated partner API stand-in for the REST puller (jobs/rest_pull.py): GET /v1/records with opaque cursors.

A STAND-IN, not a partner: it binds 127.0.0.1 only and holds synthetic records in memory.
"""
