-- Dead letters can be replayed: a fourth state, and when and where to.
--
-- A row replayed to its main topic becomes 'replayed' (so replaying again
-- selects nothing, and the dead-letter gauge drops); a row replayed to a retry
-- tier becomes 'pending' again. Both keep replayed_at and replayed_to.
--
-- The state CHECK of 0001 was unnamed, and PostgreSQL shortens generated
-- names of long tables, so it is looked up rather than guessed. "$$$$" is how
-- the migration template spells PostgreSQL's "$$" quote.

DO $$$$
DECLARE
    name text;
BEGIN
    FOR name IN
        SELECT conname FROM pg_constraint
        WHERE conrelid = '${table}'::regclass AND contype = 'c'
          AND pg_get_constraintdef(oid) LIKE '%dead_lettered%'
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', '${table}'::regclass, name);
    END LOOP;
END
$$$$;

-- NOT VALID skips scanning the table under its lock: every existing row already
-- passed the stricter check above, and new rows are checked.
ALTER TABLE ${table}
    ADD CHECK (state IN ('pending', 'succeeded', 'dead_lettered', 'replayed')) NOT VALID,
    ADD COLUMN replayed_at timestamptz,
    ADD COLUMN replayed_to text;
