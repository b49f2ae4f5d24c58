-- The retry table: one row per message that failed on the main tier.
--
-- Templated only with validated, quoted identifiers (the qualified table and
-- its index names). Every value is bound as a parameter by the code, never
-- spliced into SQL.
--
-- Headers are two parallel arrays of the same length, in record order:
-- header_names holds each name's UTF-8 bytes, header_values each value (NULL
-- for a null value). Duplicate names are simply repeated entries.

CREATE TABLE ${table} (
    id                bigserial   PRIMARY KEY,
    consumer_group    text        NOT NULL,
    main_topic        text        NOT NULL,
    kafka_partition   integer     NOT NULL,
    kafka_offset      bigint      NOT NULL,
    message_key       bytea,
    message_value     bytea,
    header_names      bytea[]     NOT NULL DEFAULT '{}',
    header_values     bytea[]     NOT NULL DEFAULT '{}',
    message_timestamp bigint      NOT NULL,
    attempts          integer     NOT NULL CHECK (attempts >= 1),
    state             text        NOT NULL DEFAULT 'pending'
                                  CHECK (state IN ('pending', 'succeeded', 'dead_lettered')),
    due_at            timestamptz NOT NULL,
    failed_at         timestamptz NOT NULL,
    claimed_until     timestamptz,
    claimed_by        text,
    last_error_type   text        NOT NULL,
    last_error        text        NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (cardinality(header_names) = cardinality(header_values))
);

-- The claim of retry tier k walks this index in due order and stops at the batch size.
CREATE INDEX ${ix_pending} ON ${table} (consumer_group, attempts, due_at)
    WHERE state = 'pending';

-- Maintenance deletes old succeeded rows through this one.
CREATE INDEX ${ix_succeeded} ON ${table} (consumer_group, updated_at)
    WHERE state = 'succeeded';

-- Listing, counting and replaying dead letters.
CREATE INDEX ${ix_dead} ON ${table} (consumer_group, main_topic, id)
    WHERE state = 'dead_lettered';
