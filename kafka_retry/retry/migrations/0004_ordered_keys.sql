-- Ordered retries: a key hash, a fifth state and attempts = 0.
--
-- With Config(ordered_retries=True) every row carries key_hash, a 64-bit hash
-- of its record key (NULL for a null key, and on every row written without
-- ordered retries: those are not ordered). A message whose key has an
-- unsettled row (pending or waiting) is stored behind it as 'waiting' with
-- attempts = 0: it has not been tried yet. A poller claims only the earliest
-- unsettled row of a key, in (partition, offset) order.
--
-- Both CHECKs are looked up and replaced, as in 0002; NOT VALID skips the scan
-- because every existing row passes the stricter checks they replace.

DO $$$$
DECLARE
    name text;
BEGIN
    FOR name IN
        SELECT conname FROM pg_constraint
        WHERE conrelid = '${table}'::regclass AND contype = 'c'
          AND (pg_get_constraintdef(oid) LIKE '%dead_lettered%'
               OR pg_get_constraintdef(oid) LIKE '%attempts >= 1%')
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', '${table}'::regclass, name);
    END LOOP;
END
$$$$;

ALTER TABLE ${table}
    ADD CHECK (state IN ('pending', 'waiting', 'succeeded', 'dead_lettered', 'replayed')) NOT VALID,
    ADD CHECK (attempts >= 0) NOT VALID,
    ADD COLUMN key_hash bigint;

-- The claim's "no earlier unsettled row of this key" test, and the main tier's
-- load of a partition's keys, walk this one; it holds unsettled keyed rows only.
CREATE INDEX ${ix_keys} ON ${table} (consumer_group, main_topic, key_hash, kafka_partition, kafka_offset)
    WHERE state IN ('pending', 'waiting') AND key_hash IS NOT NULL;

-- Tier 0's claim walks the waiting rows in due order (the pending index holds none).
CREATE INDEX ${ix_waiting} ON ${table} (consumer_group, due_at) WHERE state = 'waiting';
