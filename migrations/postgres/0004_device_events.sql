-- 0004: patient-monitoring device events (issue 24; decision 0040): each device's newest reading for internal
-- services (a ward's monitor board, an early-warning score). The Iceberg table device_events' columns (tokens of the
-- device and the patient, the reading, its alarm codes: no clear identifier) plus sent_at_ms, one row per feed and
-- device. The version of a row is (event_time_ms, record_id), not the send time: a reading taken later wins, an
-- older one (an out-of-order or allowed-late reading, a replay after a restore) changes nothing.

SET ROLE ops_owner;

CREATE TABLE ops.device_events (
    record_id text NOT NULL,
    feed text NOT NULL,
    device_token text NOT NULL,
    patient_token text NOT NULL,
    device_kind text,
    facility_id text,
    care_unit text,
    event_time timestamp with time zone,
    event_date date NOT NULL,
    heart_rate_bpm integer,
    spo2_pct integer,
    systolic_mmhg integer,
    diastolic_mmhg integer,
    respiratory_rate integer,
    temperature_c numeric(4,1),
    alarm_count integer,
    alarm_codes text,
    alarm_priority text,
    event_time_ms bigint NOT NULL,
    business_key text,
    original_key text,
    sent_at timestamp with time zone,
    sent_date date,
    source text,
    ingested_at timestamp with time zone,
    sent_at_ms bigint NOT NULL,
    PRIMARY KEY (feed, device_token)
);
CREATE INDEX device_events_patient ON ops.device_events (patient_token);

-- An update happens only for a later reading: the same reading again or an older one changes nothing.
CREATE FUNCTION ops.device_events_keep_newest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.event_time_ms, NEW.record_id) > (OLD.event_time_ms, OLD.record_id) THEN
        RETURN NEW;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER keep_newest BEFORE UPDATE ON ops.device_events FOR EACH ROW
    EXECUTE FUNCTION ops.device_events_keep_newest();

-- The job only inserts (decision 0035): an insert of a device already there becomes an update of its row, which
-- the trigger above lets through only for a later reading.
CREATE FUNCTION ops.device_events_insert_as_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ops.device_events WHERE feed = NEW.feed AND device_token = NEW.device_token) THEN
        UPDATE ops.device_events SET (record_id, feed, device_token, patient_token, device_kind, facility_id, care_unit, event_time, event_date, heart_rate_bpm, spo2_pct, systolic_mmhg, diastolic_mmhg, respiratory_rate, temperature_c, alarm_count, alarm_codes, alarm_priority, event_time_ms, business_key, original_key, sent_at, sent_date, source, ingested_at, sent_at_ms)
            = (NEW.record_id, NEW.feed, NEW.device_token, NEW.patient_token, NEW.device_kind, NEW.facility_id, NEW.care_unit, NEW.event_time, NEW.event_date, NEW.heart_rate_bpm, NEW.spo2_pct, NEW.systolic_mmhg, NEW.diastolic_mmhg, NEW.respiratory_rate, NEW.temperature_c, NEW.alarm_count, NEW.alarm_codes, NEW.alarm_priority, NEW.event_time_ms, NEW.business_key, NEW.original_key, NEW.sent_at, NEW.sent_date, NEW.source, NEW.ingested_at, NEW.sent_at_ms)
            WHERE feed = NEW.feed AND device_token = NEW.device_token;
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER insert_as_update BEFORE INSERT ON ops.device_events FOR EACH ROW
    EXECUTE FUNCTION ops.device_events_insert_as_update();

RESET ROLE;
GRANT SELECT, INSERT, UPDATE ON ops.device_events TO ops_writer;
GRANT SELECT ON ops.device_events TO ops_reader;
