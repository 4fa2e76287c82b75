-- Message keys (partitioned streams route by them; consumers read them back). NULL when a
-- message has none. A nullable column without a default is added without rewriting the
-- table, and drivers that do not know it keep working: they store NULL.
ALTER TABLE {schema}.messages ADD COLUMN key bytea;
