-- Revisioned records (the state of each consumer group), written by compare-and-swap
-- on `revision`. A group's row is rewritten on commits and heartbeats: no index but
-- the primary key, and room on the page, so those updates stay HOT.
CREATE TABLE {schema}.records (
    key      text   PRIMARY KEY,
    revision bigint NOT NULL CHECK (revision > 0),
    value    jsonb  NOT NULL
) WITH (fillfactor = 50);
