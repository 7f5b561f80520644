-- triggers: the one clock of the SQL API.
--
-- Every function that reads the time reads it here, so a test can set it:
--   SET triggers.test_clock = on;                   -- superuser only (or in postgresql.conf)
--   SET triggers.now = '2030-01-01 00:00:00+00';   -- this session's clock stands still
--   RESET triggers.now;                             -- back to the real clock
-- Unset or empty means clock_timestamp(), the real time (not the transaction start).
-- While triggers.test_clock is off (the default), triggers.now is ignored: any role can
-- set a custom setting, and a role that could move the clock back could use a key
-- after its expiry.

CREATE FUNCTION triggers._now() RETURNS timestamptz
LANGUAGE sql VOLATILE AS $$
    SELECT CASE WHEN triggers._test_clock()
                THEN coalesce(nullif(current_setting('triggers.now', true), '')::timestamptz, clock_timestamp())
                ELSE clock_timestamp() END
$$;
COMMENT ON FUNCTION triggers._now IS
    'Internal: the time: clock_timestamp(), or the session setting triggers.now where the superuser-only triggers.test_clock allows it (tests).';

-- The same as epoch milliseconds, for the session settings that remember when a session
-- last notified (_wake) or folded metrics (_fold_metrics).
CREATE FUNCTION triggers._now_ms() RETURNS float8
LANGUAGE sql VOLATILE AS $$
    SELECT (extract(epoch FROM triggers._now()) * 1000)::float8
$$;
COMMENT ON FUNCTION triggers._now_ms IS 'Internal: triggers._now() as milliseconds since the Unix epoch.';
