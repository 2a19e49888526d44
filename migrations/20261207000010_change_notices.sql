-- Several instances cache what changes rarely (the gateway directory, converters, alarm rules).
-- A change committed by any of them, or by an admin command, is announced on channel
-- `headend_changes` (payload: what changed) at commit, so every instance reloads at once instead
-- of at its next periodic reload. Statement-level, and only for the columns those caches hold:
-- ingest's frequent updates (last seen, online, polling state) announce nothing.
CREATE FUNCTION headend_announce_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('headend_changes', TG_ARGV[0]);
    RETURN NULL;
END
$$;

CREATE TRIGGER gateways_changed
    AFTER INSERT OR DELETE OR UPDATE OF serial, site_id, time_zone, password_hash, topic_root,
        topic_pub, topic_sub, kind
    ON gateways FOR EACH STATEMENT EXECUTE FUNCTION headend_announce_change('gateways');
CREATE TRIGGER sites_changed
    AFTER DELETE OR UPDATE OF time_zone
    ON sites FOR EACH STATEMENT EXECUTE FUNCTION headend_announce_change('gateways');
CREATE TRIGGER converters_changed
    AFTER INSERT OR DELETE OR UPDATE OF host, port, gap_ms, timeout_ms, retries, enabled
    ON converters FOR EACH STATEMENT EXECUTE FUNCTION headend_announce_change('converters');
CREATE TRIGGER polled_devices_changed
    AFTER INSERT OR DELETE OR UPDATE OF unit_id, kind, model, serial, poll_interval_ms, enabled
    ON polled_devices FOR EACH STATEMENT EXECUTE FUNCTION headend_announce_change('converters');
CREATE TRIGGER alarm_rules_changed
    AFTER INSERT OR DELETE OR UPDATE
    ON alarm_rules FOR EACH STATEMENT EXECUTE FUNCTION headend_announce_change('alarm_rules');
