-- Deleted records. A delete keeps the row as a tombstone (value NULL) with its revision
-- grown by one, so that a record created again under the same key continues from there:
-- a client still holding a revision from before the delete can never match a revision of
-- the new record. Dropping NOT NULL changes the catalog only.
ALTER TABLE {schema}.records ALTER COLUMN value DROP NOT NULL;
