-- Tracing: the span of the attempt that failed last, in W3C traceparent form
-- (00-<trace id>-<span id>-<flags>), so that the next attempt's span links to
-- it. NULL when tracing was off; adding a nullable column rewrites no row.

ALTER TABLE ${table} ADD COLUMN last_span text;
