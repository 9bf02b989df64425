"""Partner delivery: the DynamoDB delivery ledger (the HTTP client and the job come later)."""
