-- The current view of claims (DuckDB SQL over a relation named `claims` with the Iceberg table's columns).
--
-- The claims table is append-only history. A record whose original_key is set corrects or voids
-- the claim whose business_key equals that original_key: frequency_code '7' replaces it, '8' voids it.
-- Per claim identity COALESCE(original_key, business_key) the latest record by sent_at wins
-- (ties: the later ingested_at, then the larger record_id, so the result is deterministic);
-- a claim whose latest record is a void is not current, so it is dropped.
WITH versions AS (
    SELECT
        *,
        COALESCE(original_key, business_key) AS claim_identity,
        ROW_NUMBER() OVER (
            PARTITION BY COALESCE(original_key, business_key)
            ORDER BY sent_at DESC NULLS LAST, ingested_at DESC NULLS LAST, record_id DESC
        ) AS version_rank
    FROM claims
)
SELECT * EXCLUDE (version_rank)
FROM versions
WHERE version_rank = 1
  AND frequency_code IS DISTINCT FROM '8'
