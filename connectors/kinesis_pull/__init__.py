"""The Kinesis door (jobs/kinesis_pull.py, decision 0039): a Kinesis data stream onto raw.<feed>, exactly once.

The work runs in a JVM on the Kinesis Client Library 3 (java/, built by pom.xml into lib/kcl/): leases and
checkpoints in DynamoDB, polling reads, parent shards read to their end before their children. Each shard's
record processor produces a batch and the shard's cursor in one Kafka transaction, commits it, then
checkpoints; a batch read again after a crash is skipped up to the cursor. This package holds the Python
side: the `kinesis_pull` property group (config.py) and the worker's settings and command line (worker.py).
"""
