-- Streams and their messages. `{schema}` is replaced by the configured schema name.

-- One row per stream holding its highest offset. An append locks this row
-- (UPDATE ... RETURNING) for the length of its transaction, which is what makes
-- offsets visible in order: see offsets.rs. The row is rewritten by every append,
-- so it carries no index besides the primary key (updates stay HOT) and leaves
-- room on its page (fillfactor) for the new row versions when vacuum lags.
CREATE TABLE {schema}.streams (
    name text PRIMARY KEY,
    head bigint NOT NULL DEFAULT 0 CHECK (head >= 0)
) WITH (fillfactor = 50);

CREATE TABLE {schema}.messages (
    stream      text        NOT NULL,
    "offset"    bigint      NOT NULL CHECK ("offset" > 0),
    body        bytea       NOT NULL,
    headers     jsonb       NOT NULL DEFAULT '{}',
    produced_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, "offset")
);
