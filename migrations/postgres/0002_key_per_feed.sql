-- 0002: one row per feed and business key (was: per business key). A business key is the same digest whatever
-- feed sent the record, so the stores of different sources (and of different test runs) shared rows; the current
-- state is now each feed's newest version of each key. The triggers compare versions within that row.

ALTER TABLE ops.claims DROP CONSTRAINT claims_pkey;
ALTER TABLE ops.claims ADD PRIMARY KEY (feed, business_key);
CREATE OR REPLACE FUNCTION ops.claims_insert_as_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ops.claims WHERE feed = NEW.feed AND business_key = NEW.business_key) THEN
        UPDATE ops.claims SET (record_id, feed, claim_id, frequency_code, payer_id, billing_npi, rendering_npi, service_date_from, service_date_to, place_of_service, primary_diagnosis, diagnosis_count, service_line_count, total_charge, claim_kind, payer_name, payer_line_of_business, enrichment_misses, billing_provider_taxonomy, business_key, original_key, sent_at, sent_date, source, ingested_at, sent_at_ms)
            = (NEW.record_id, NEW.feed, NEW.claim_id, NEW.frequency_code, NEW.payer_id, NEW.billing_npi, NEW.rendering_npi, NEW.service_date_from, NEW.service_date_to, NEW.place_of_service, NEW.primary_diagnosis, NEW.diagnosis_count, NEW.service_line_count, NEW.total_charge, NEW.claim_kind, NEW.payer_name, NEW.payer_line_of_business, NEW.enrichment_misses, NEW.billing_provider_taxonomy, NEW.business_key, NEW.original_key, NEW.sent_at, NEW.sent_date, NEW.source, NEW.ingested_at, NEW.sent_at_ms)
            WHERE feed = NEW.feed AND business_key = NEW.business_key;
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;

ALTER TABLE ops.payments DROP CONSTRAINT payments_pkey;
ALTER TABLE ops.payments ADD PRIMARY KEY (feed, business_key);
CREATE OR REPLACE FUNCTION ops.payments_insert_as_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ops.payments WHERE feed = NEW.feed AND business_key = NEW.business_key) THEN
        UPDATE ops.payments SET (record_id, feed, payment_id, trace_number, payer_id, payee_npi, payment_date, payment_amount, payment_method, paid_claim_count, payer_name, payer_line_of_business, enrichment_misses, business_key, original_key, sent_at, sent_date, source, ingested_at, sent_at_ms)
            = (NEW.record_id, NEW.feed, NEW.payment_id, NEW.trace_number, NEW.payer_id, NEW.payee_npi, NEW.payment_date, NEW.payment_amount, NEW.payment_method, NEW.paid_claim_count, NEW.payer_name, NEW.payer_line_of_business, NEW.enrichment_misses, NEW.business_key, NEW.original_key, NEW.sent_at, NEW.sent_date, NEW.source, NEW.ingested_at, NEW.sent_at_ms)
            WHERE feed = NEW.feed AND business_key = NEW.business_key;
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;

ALTER TABLE ops.eligibility DROP CONSTRAINT eligibility_pkey;
ALTER TABLE ops.eligibility ADD PRIMARY KEY (feed, business_key);
CREATE OR REPLACE FUNCTION ops.eligibility_insert_as_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ops.eligibility WHERE feed = NEW.feed AND business_key = NEW.business_key) THEN
        UPDATE ops.eligibility SET (record_id, feed, member_token, person_token, subscriber_token, relationship, plan_code, group_number, coverage_level, coverage_start, coverage_end, maintenance_type_code, dependent_count, business_key, original_key, sent_at, sent_date, source, ingested_at, sent_at_ms)
            = (NEW.record_id, NEW.feed, NEW.member_token, NEW.person_token, NEW.subscriber_token, NEW.relationship, NEW.plan_code, NEW.group_number, NEW.coverage_level, NEW.coverage_start, NEW.coverage_end, NEW.maintenance_type_code, NEW.dependent_count, NEW.business_key, NEW.original_key, NEW.sent_at, NEW.sent_date, NEW.source, NEW.ingested_at, NEW.sent_at_ms)
            WHERE feed = NEW.feed AND business_key = NEW.business_key;
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;
