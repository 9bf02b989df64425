"""The REST ingestion API: feeds POST records to /v1/feeds/{feed}/records; accepted ones go to raw.<feed>."""
