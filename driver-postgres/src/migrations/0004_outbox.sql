-- Messages sent inside an application's transaction (`send_in`), one row per call so that a
-- call's messages stay together, waiting for a relay to append them to their logs once that
-- transaction has committed (until then they are invisible to the relay).
CREATE TABLE {schema}.outbox (
    id      bigserial PRIMARY KEY,
    streams text[]    NOT NULL,
    bodies  bytea[]   NOT NULL,
    headers jsonb[]   NOT NULL,
    keys    bytea[]   NOT NULL
);
