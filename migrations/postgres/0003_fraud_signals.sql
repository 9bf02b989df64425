-- 0003: the fraud detectors' signals (issue 24; udfs/fraud.py, decision 0038): the Iceberg table fraud_signals'
-- columns (a member token, an NPI, dates, counts, business-key digests: no clear identifier), one row per signal
-- id. A signal is written once and never changes: an insert of a stored id (a replay after a restore) is skipped.

SET ROLE ops_owner;

CREATE TABLE ops.fraud_signals (
    signal_id text NOT NULL PRIMARY KEY,
    rule text NOT NULL,
    member_token text NOT NULL,
    provider_npi text,
    service_date date,
    evidence_count integer,
    threshold integer,
    evidence_keys text,
    feed text NOT NULL,
    detected_at timestamp with time zone,
    ingested_at timestamp with time zone,
    detected_date date NOT NULL
);
CREATE INDEX fraud_signals_member ON ops.fraud_signals (member_token);
CREATE INDEX fraud_signals_rule_detected ON ops.fraud_signals (rule, detected_at);
CREATE FUNCTION ops.fraud_signals_insert_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ops.fraud_signals WHERE signal_id = NEW.signal_id) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER insert_once BEFORE INSERT ON ops.fraud_signals FOR EACH ROW
    EXECUTE FUNCTION ops.fraud_signals_insert_once();

RESET ROLE;
GRANT SELECT, INSERT ON ops.fraud_signals TO ops_writer;
GRANT SELECT ON ops.fraud_signals TO ops_reader;
