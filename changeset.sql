-- meetperry schema. Idempotent: safe to run again, and over a database made by
-- the seed service's own changeset (its meetperry.task rows are kept).
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f changeset.sql

CREATE SCHEMA IF NOT EXISTS meetperry;

-- The task table exactly as the seed service made it (column for column, as
-- information_schema.columns shows it); other tools read it.
CREATE TABLE IF NOT EXISTS meetperry.task (
    id             BIGSERIAL PRIMARY KEY,
    external_id    text NOT NULL UNIQUE,
    user_id        text NOT NULL,
    content        text NOT NULL,
    completed_date timestamptz,
    deleted_date   timestamptz,
    created_date   timestamptz DEFAULT CURRENT_TIMESTAMP,
    updated_date   timestamptz DEFAULT CURRENT_TIMESTAMP
);

-- A table made by an earlier changeset of ours (external_id and content
-- nullable, created_date and updated_date NOT NULL) is brought to the seed's.
-- Rows that would break the seed's NOT NULL constraints stop the changeset
-- with what to do; nothing is changed then.
DO $$
DECLARE
    without_id bigint;
    without_content bigint;
BEGIN
    SELECT count(*) FILTER (WHERE external_id IS NULL), count(*) FILTER (WHERE content IS NULL)
    INTO without_id, without_content FROM meetperry.task;
    IF without_id > 0 OR without_content > 0 THEN
        RAISE EXCEPTION 'meetperry.task cannot take the seed''s NOT NULL constraints: % row(s) have no external_id, % row(s) have no content',
            without_id, without_content
            USING HINT = 'Fill in or delete them (SELECT id FROM meetperry.task WHERE external_id IS NULL OR content IS NULL), then run changeset.sql again.';
    END IF;
END
$$;
ALTER TABLE meetperry.task
    ALTER COLUMN external_id SET NOT NULL,
    ALTER COLUMN content SET NOT NULL,
    ALTER COLUMN created_date DROP NOT NULL,
    ALTER COLUMN created_date SET DEFAULT CURRENT_TIMESTAMP,
    ALTER COLUMN updated_date DROP NOT NULL,
    ALTER COLUMN updated_date SET DEFAULT CURRENT_TIMESTAMP;

-- Room on each page for a row's next versions: a task is written once and then
-- updated once or twice (completed, deleted). With full pages (the default), a
-- fifth of those updates found no room beside the row, so they wrote a new
-- page and an entry in each of the table's indexes; with a fifth of each page
-- kept free, nearly all of them stay on the row's page (HOT: no index entry),
-- and the applier's time-ordered archive applies about an eighth faster. The
-- table ends about 7 % larger (bench/applier.sh, README "Performance").
-- A storage setting, not a column: the seed's table is otherwise unchanged.
-- It applies to pages written from now on.
ALTER TABLE meetperry.task SET (fillfactor = 80);

-- Rows put in with explicit ids (a restore, the seed's own tools) can leave the
-- id sequence behind them; the applier would then collide with them and retry.
-- Only ever moves the sequence forward.
SELECT setval(pg_get_serial_sequence('meetperry.task', 'id'), m)
FROM (SELECT max(id) AS m FROM meetperry.task) AS t
WHERE m IS NOT NULL AND m >= (SELECT last_value FROM meetperry.task_id_seq);

CREATE OR REPLACE FUNCTION meetperry.set_updated_date() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_date := now();
    RETURN NEW;
END;
$$;

-- Every update stamps updated_date with now(). An update that sets it to
-- now() itself (the applier's do) needs no call of the function: the WHEN is
-- checked without one, which saves a sixth of the applier's update time.
DROP TRIGGER IF EXISTS task_set_updated_date ON meetperry.task;
CREATE TRIGGER task_set_updated_date
    BEFORE UPDATE ON meetperry.task
    FOR EACH ROW WHEN (NEW.updated_date IS DISTINCT FROM now())
    EXECUTE FUNCTION meetperry.set_updated_date();

-- Every distinct event ever received, keyed by its identity (README, "The
-- applier"): the
-- applier stores an identity once (a duplicate never gets here); events
-- waiting for their `created` (pending) and events the rules reject stay here
-- for audit and recompute.
CREATE TABLE IF NOT EXISTS meetperry.task_event (
    identity     uuid NOT NULL,
    event        text NOT NULL CHECK (event IN ('created', 'updated', 'deleted')),
    external_id  text NOT NULL,
    user_id      text NOT NULL,
    content      text NOT NULL,
    is_completed boolean NOT NULL,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz,
    delivery_id  text,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    -- The identity already includes the task id, so this key is as unique as
    -- the identity alone, and one index serves both duplicate detection and
    -- "every event of these tasks" when a task is folded again.
    PRIMARY KEY (external_id, identity)
);

-- The transaction that stored each event (pg_current_xact_id(), its 64-bit
-- value). The reporter's corrections ask "which events were committed since
-- my previous run?": an event is new to a run when its transaction is not
-- visible in the snapshot the previous run read under. That holds however
-- concurrent appliers' transactions interleave and commit, which neither the
-- sender's timestamps nor applied_at can promise. A bigint (not xid8) so a BRIN
-- index can serve it: ids grow with insertion, so a run reads only the tail.
ALTER TABLE meetperry.task_event
    ADD COLUMN IF NOT EXISTS xact_id bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);

-- The reporter asks which tasks have events after a window's end (those are
-- judged from their events rather than from the row), and which events were
-- committed since its previous run (xact_id, above). Events arrive roughly in
-- time order and ids grow with insertion, so a BRIN index answers both for
-- almost nothing on insert. One index of both columns, not one of each: each
-- column is summarised on its own, so either question uses it alone, and every
-- inserted row pays one BRIN insertion (PostgreSQL 15 reads the index's
-- metapage for each) instead of two: about a twentieth of the event log's COPY.
-- Databases made with the two single-column indexes get this one instead.
DROP INDEX IF EXISTS meetperry.task_event_occurred_at;
DROP INDEX IF EXISTS meetperry.task_event_xact_id;
CREATE INDEX IF NOT EXISTS task_event_occurred_at_xact_id ON meetperry.task_event USING brin (occurred_at, xact_id);

-- The rules' verdict on each stored event, as of the last time its task was
-- folded: NULL while the event is applied or pending, else the rule that
-- refuses it ('owner_change': sent by another user than the task's creator;
-- 'conflicting_created': a created event that lost to an earlier one). A
-- duplicate of a refused event is refused again, from here, without folding
-- its task: a replay of an archive writes its rejects again.
-- Added to an older event log, it is filled in once, by the applier (whose
-- rules decide which creation wins): the need is recorded here, in
-- meetperry.pending_fill, and the applier's first connection folds every
-- task, stores the refusals and removes the need (README, The applier).
CREATE TABLE IF NOT EXISTS meetperry.pending_fill (
    what text PRIMARY KEY
);
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = 'meetperry' AND table_name = 'task_event' AND column_name = 'rejection') THEN
        ALTER TABLE meetperry.task_event ADD COLUMN rejection text
            CHECK (rejection IN ('owner_change', 'conflicting_created'));
        IF EXISTS (SELECT 1 FROM meetperry.task_event) THEN
            INSERT INTO meetperry.pending_fill VALUES ('task_event.rejection') ON CONFLICT DO NOTHING;
        END IF;
    END IF;
END
$$;

-- One row per task partition (the applier's 16, TaskPartition in the code):
-- its version, bumped by every transaction that writes events or rows of the
-- partition's tasks, under the partition's advisory lock. An applier keeps
-- what it has just written of its tasks in memory and trusts it only while
-- the version is the one its own last write left. Anyone changing
-- meetperry.task or meetperry.task_event by hand while appliers run bumps
-- them too (README, The applier):
--   UPDATE meetperry.partition_version SET version = version + 1;
CREATE TABLE IF NOT EXISTS meetperry.partition_version (
    partition integer PRIMARY KEY CHECK (partition >= 0 AND partition < 16),
    version   bigint NOT NULL DEFAULT 0
);
INSERT INTO meetperry.partition_version (partition) SELECT generate_series(0, 15) ON CONFLICT DO NOTHING;

-- The cron cursor: one row per finished reporter run, written only after
-- every file of its window is on disk. The next run starts at the latest end.
CREATE TABLE IF NOT EXISTS meetperry.report_run (
    id           bigserial PRIMARY KEY,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    users        integer NOT NULL,
    files        integer NOT NULL,
    tasks        bigint NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (window_start < window_end)
);
CREATE INDEX IF NOT EXISTS report_run_window_end ON meetperry.report_run (window_end);
-- The snapshot the run read under (pg_current_snapshot()): the next run's
-- corrections are the events whose transactions it does not see. Late events
-- the run found and the files it rewrote for them.
ALTER TABLE meetperry.report_run ADD COLUMN IF NOT EXISTS snapshot pg_snapshot;
ALTER TABLE meetperry.report_run ADD COLUMN IF NOT EXISTS late_events bigint NOT NULL DEFAULT 0;
ALTER TABLE meetperry.report_run ADD COLUMN IF NOT EXISTS corrected_files integer NOT NULL DEFAULT 0;
