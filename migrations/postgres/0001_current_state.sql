-- 0001: the operational store (issue 24; connectors/operational.py, decisions 0034 and 0035).
-- Roles: ops_owner owns the schema and its tables (no login); ops_writer is the ingest job's (it inserts; its
-- inserts of a known key become updates); ops_reader is internal services' (select only). Passwords are set
-- by `medistream stack up` (infra/local/postgres.py), never here.
-- One table per record type: the Iceberg table's columns (tokens and masks only) plus sent_at_ms, one row per
-- business key. The version of a row is (sent_at_ms, record_id): the triggers keep the newest, for any writer.

CREATE ROLE ops_owner NOLOGIN;
CREATE ROLE ops_writer LOGIN;
CREATE ROLE ops_reader LOGIN;
CREATE SCHEMA ops AUTHORIZATION ops_owner;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
SET ROLE ops_owner;

CREATE TABLE ops.claims (
    record_id text NOT NULL,
    feed text NOT NULL,
    claim_id text,
    frequency_code text,
    payer_id text,
    billing_npi text,
    rendering_npi text,
    service_date_from date,
    service_date_to date,
    place_of_service text,
    primary_diagnosis text,
    diagnosis_count integer,
    service_line_count integer,
    total_charge numeric(14,2),
    claim_kind text,
    payer_name text,
    payer_line_of_business text,
    enrichment_misses text,
    billing_provider_taxonomy text,
    business_key text,
    original_key text,
    sent_at timestamp with time zone,
    sent_date date,
    source text,
    ingested_at timestamp with time zone,
    sent_at_ms bigint NOT NULL,
    PRIMARY KEY (business_key)
);

-- An update happens only for a newer version: the same record again (a replay) or an older one changes nothing.
CREATE FUNCTION ops.claims_keep_newest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.sent_at_ms, NEW.record_id) > (OLD.sent_at_ms, OLD.record_id) THEN
        RETURN NEW;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER keep_newest BEFORE UPDATE ON ops.claims FOR EACH ROW EXECUTE FUNCTION ops.claims_keep_newest();

-- The job only inserts (decision 0035): an insert of a key already there becomes an update of it, which the
-- trigger above lets through only when newer. Two writers inserting one new key at once: one fails on the
-- primary key, and its retry finds the row.
CREATE FUNCTION ops.claims_insert_as_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ops.claims WHERE business_key = NEW.business_key) THEN
        UPDATE ops.claims SET (record_id, feed, claim_id, frequency_code, payer_id, billing_npi, rendering_npi, service_date_from, service_date_to, place_of_service, primary_diagnosis, diagnosis_count, service_line_count, total_charge, claim_kind, payer_name, payer_line_of_business, enrichment_misses, billing_provider_taxonomy, business_key, original_key, sent_at, sent_date, source, ingested_at, sent_at_ms)
            = (NEW.record_id, NEW.feed, NEW.claim_id, NEW.frequency_code, NEW.payer_id, NEW.billing_npi, NEW.rendering_npi, NEW.service_date_from, NEW.service_date_to, NEW.place_of_service, NEW.primary_diagnosis, NEW.diagnosis_count, NEW.service_line_count, NEW.total_charge, NEW.claim_kind, NEW.payer_name, NEW.payer_line_of_business, NEW.enrichment_misses, NEW.billing_provider_taxonomy, NEW.business_key, NEW.original_key, NEW.sent_at, NEW.sent_date, NEW.source, NEW.ingested_at, NEW.sent_at_ms)
            WHERE business_key = NEW.business_key;
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER insert_as_update BEFORE INSERT ON ops.claims FOR EACH ROW
    EXECUTE FUNCTION ops.claims_insert_as_update();

CREATE TABLE ops.payments (
    record_id text NOT NULL,
    feed text NOT NULL,
    payment_id text,
    trace_number text,
    payer_id text,
    payee_npi text,
    payment_date date,
    payment_amount numeric(14,2),
    payment_method text,
    paid_claim_count integer,
    payer_name text,
    payer_line_of_business text,
    enrichment_misses text,
    business_key text,
    original_key text,
    sent_at timestamp with time zone,
    sent_date date,
    source text,
    ingested_at timestamp with time zone,
    sent_at_ms bigint NOT NULL,
    PRIMARY KEY (business_key)
);

-- An update happens only for a newer version: the same record again (a replay) or an older one changes nothing.
CREATE FUNCTION ops.payments_keep_newest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.sent_at_ms, NEW.record_id) > (OLD.sent_at_ms, OLD.record_id) THEN
        RETURN NEW;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER keep_newest BEFORE UPDATE ON ops.payments FOR EACH ROW EXECUTE FUNCTION ops.payments_keep_newest();

-- The job only inserts (decision 0035): an insert of a key already there becomes an update of it, which the
-- trigger above lets through only when newer. Two writers inserting one new key at once: one fails on the
-- primary key, and its retry finds the row.
CREATE FUNCTION ops.payments_insert_as_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ops.payments WHERE business_key = NEW.business_key) THEN
        UPDATE ops.payments SET (record_id, feed, payment_id, trace_number, payer_id, payee_npi, payment_date, payment_amount, payment_method, paid_claim_count, payer_name, payer_line_of_business, enrichment_misses, business_key, original_key, sent_at, sent_date, source, ingested_at, sent_at_ms)
            = (NEW.record_id, NEW.feed, NEW.payment_id, NEW.trace_number, NEW.payer_id, NEW.payee_npi, NEW.payment_date, NEW.payment_amount, NEW.payment_method, NEW.paid_claim_count, NEW.payer_name, NEW.payer_line_of_business, NEW.enrichment_misses, NEW.business_key, NEW.original_key, NEW.sent_at, NEW.sent_date, NEW.source, NEW.ingested_at, NEW.sent_at_ms)
            WHERE business_key = NEW.business_key;
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER insert_as_update BEFORE INSERT ON ops.payments FOR EACH ROW
    EXECUTE FUNCTION ops.payments_insert_as_update();

CREATE TABLE ops.eligibility (
    record_id text NOT NULL,
    feed text NOT NULL,
    member_token text,
    person_token text,
    subscriber_token text,
    relationship text,
    plan_code text,
    group_number text,
    coverage_level text,
    coverage_start date,
    coverage_end date,
    maintenance_type_code text,
    dependent_count integer,
    business_key text,
    original_key text,
    sent_at timestamp with time zone,
    sent_date date,
    source text,
    ingested_at timestamp with time zone,
    sent_at_ms bigint NOT NULL,
    PRIMARY KEY (business_key)
);

-- An update happens only for a newer version: the same record again (a replay) or an older one changes nothing.
CREATE FUNCTION ops.eligibility_keep_newest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.sent_at_ms, NEW.record_id) > (OLD.sent_at_ms, OLD.record_id) THEN
        RETURN NEW;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER keep_newest BEFORE UPDATE ON ops.eligibility FOR EACH ROW EXECUTE FUNCTION ops.eligibility_keep_newest();

-- The job only inserts (decision 0035): an insert of a key already there becomes an update of it, which the
-- trigger above lets through only when newer. Two writers inserting one new key at once: one fails on the
-- primary key, and its retry finds the row.
CREATE FUNCTION ops.eligibility_insert_as_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ops.eligibility WHERE business_key = NEW.business_key) THEN
        UPDATE ops.eligibility SET (record_id, feed, member_token, person_token, subscriber_token, relationship, plan_code, group_number, coverage_level, coverage_start, coverage_end, maintenance_type_code, dependent_count, business_key, original_key, sent_at, sent_date, source, ingested_at, sent_at_ms)
            = (NEW.record_id, NEW.feed, NEW.member_token, NEW.person_token, NEW.subscriber_token, NEW.relationship, NEW.plan_code, NEW.group_number, NEW.coverage_level, NEW.coverage_start, NEW.coverage_end, NEW.maintenance_type_code, NEW.dependent_count, NEW.business_key, NEW.original_key, NEW.sent_at, NEW.sent_date, NEW.source, NEW.ingested_at, NEW.sent_at_ms)
            WHERE business_key = NEW.business_key;
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER insert_as_update BEFORE INSERT ON ops.eligibility FOR EACH ROW
    EXECUTE FUNCTION ops.eligibility_insert_as_update();

RESET ROLE;
GRANT USAGE ON SCHEMA ops TO ops_writer, ops_reader;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA ops TO ops_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA ops TO ops_reader;
