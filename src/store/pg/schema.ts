// The PostgreSQL store's schema (issue 17): the same tables as the embedded
// store (src/store/*.ts), ported: epoch milliseconds and counts as BIGINT,
// flags as SMALLINT 0/1, JSON as TEXT, rowids as identity columns. Columns
// that are paged or compared by order (event and queue ids, suppressed
// addresses) are COLLATE "C": byte order, as SQLite's, whatever the
// database's collation, and their indexes serve those comparisons. Steps are
// applied at open, inside one transaction that holds an advisory lock, so
// two nodes starting together apply each step once: the second waits, then
// finds the version already there.

import type { SyncPgClient } from './sync-client.ts';

/** pg_advisory_xact_lock key of schema changes ("tern" in ASCII). */
const MIGRATION_LOCK = 0x7465726e;

const STEP_1 = `
CREATE TABLE users (
  address TEXT PRIMARY KEY,
  password_hash TEXT NOT NULL,
  send_as TEXT NOT NULL DEFAULT '[]',
  messages_per_hour BIGINT,
  recipients_per_message BIGINT,
  created_at BIGINT NOT NULL,
  admin SMALLINT NOT NULL DEFAULT 0
);
CREATE TABLE greylist (
  triplet TEXT PRIMARY KEY,
  first_seen BIGINT NOT NULL,
  passed_at BIGINT,
  expires BIGINT NOT NULL
);
CREATE INDEX greylist_expires ON greylist (expires);
CREATE TABLE api_keys (
  name TEXT PRIMARY KEY,
  hash TEXT NOT NULL UNIQUE,
  send_as TEXT NOT NULL DEFAULT '[]',
  admin SMALLINT NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL,
  messages_per_hour BIGINT
);
-- Nodes cache users and API keys; any change, from any node or psql, tells them all (LISTEN, src/store/pg/store.ts).
CREATE FUNCTION notify_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('tern_' || TG_TABLE_NAME, '');
  RETURN NULL;
END $$;
CREATE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE ON users FOR EACH STATEMENT EXECUTE FUNCTION notify_changed();
CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE ON api_keys FOR EACH STATEMENT EXECUTE FUNCTION notify_changed();
CREATE TABLE dkim_keys (
  domain TEXT NOT NULL,
  selector TEXT NOT NULL,
  algorithm TEXT NOT NULL,
  private_key TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (domain, selector)
);
CREATE TRIGGER dkim_keys_changed AFTER INSERT OR UPDATE OR DELETE ON dkim_keys FOR EACH STATEMENT EXECUTE FUNCTION notify_changed();
-- Rate and failure counts of every node (src/policy/shared-counts.ts): per key, minute bucket and node.
CREATE TABLE shared_counts (
  key TEXT NOT NULL,
  bucket BIGINT NOT NULL,
  node TEXT NOT NULL,
  count BIGINT NOT NULL,
  PRIMARY KEY (key, bucket, node)
);
CREATE INDEX shared_counts_bucket ON shared_counts (bucket);
CREATE TABLE messages (
  id TEXT COLLATE "C" PRIMARY KEY,
  sender TEXT NOT NULL,
  message_id TEXT,
  created_at BIGINT NOT NULL,
  sender_base TEXT NOT NULL DEFAULT '',
  sender_domain TEXT NOT NULL DEFAULT '',
  subject TEXT
);
CREATE INDEX messages_created ON messages (created_at);
CREATE INDEX messages_sender_base ON messages (sender_base);
CREATE INDEX messages_sender_domain ON messages (sender_domain);
CREATE INDEX messages_sender ON messages (sender, id);
CREATE INDEX messages_message_id ON messages (message_id);
CREATE INDEX dash_messages_scan ON messages (id, created_at, subject);
CREATE TABLE idempotency (
  api_key TEXT NOT NULL,
  idem_key TEXT NOT NULL,
  body_hash TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  status BIGINT,
  response TEXT,
  PRIMARY KEY (api_key, idem_key)
);
CREATE INDEX idempotency_created ON idempotency (created_at);
CREATE TABLE events (
  id TEXT COLLATE "C" PRIMARY KEY,
  queue_id TEXT COLLATE "C" NOT NULL,
  type TEXT NOT NULL,
  recipient TEXT NOT NULL,
  body TEXT NOT NULL
);
CREATE INDEX events_queue ON events (queue_id, id);
CREATE INDEX events_recipient ON events (recipient, id);
CREATE INDEX dash_events_recipient ON events (recipient, queue_id) WHERE type = 'queued';

CREATE TABLE webhooks (
  id TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  url TEXT NOT NULL,
  events TEXT,
  secret TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  disabled_at BIGINT,
  disabled_reason TEXT
);
CREATE INDEX webhooks_owner ON webhooks (owner);
CREATE TRIGGER webhooks_changed AFTER INSERT OR UPDATE OR DELETE ON webhooks FOR EACH STATEMENT EXECUTE FUNCTION notify_changed();
CREATE TABLE webhook_outbox (
  seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  webhook_id TEXT NOT NULL,
  event_id TEXT NOT NULL,
  event_at BIGINT NOT NULL,
  body TEXT NOT NULL,
  attempts BIGINT NOT NULL DEFAULT 0,
  next_attempt BIGINT NOT NULL,
  claimed_until BIGINT
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (webhook_id, next_attempt);
CREATE INDEX webhook_outbox_claimed ON webhook_outbox (claimed_until) WHERE claimed_until IS NOT NULL;
CREATE TABLE webhook_deliveries (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  webhook_id TEXT NOT NULL,
  event_id TEXT NOT NULL,
  attempt BIGINT NOT NULL,
  at BIGINT NOT NULL,
  status BIGINT,
  error TEXT,
  duration_ms BIGINT NOT NULL,
  outcome TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id);

CREATE TABLE suppressions (
  address TEXT COLLATE "C" PRIMARY KEY,
  reason TEXT NOT NULL,
  source TEXT NOT NULL,
  detail TEXT,
  created_at BIGINT NOT NULL
);
CREATE TABLE suppression_version (n BIGINT NOT NULL);
INSERT INTO suppression_version (n) VALUES (0);
-- Any change, from any node or a psql session: the counter moves and every node hears of it.
CREATE FUNCTION suppressions_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE suppression_version SET n = n + 1;
  PERFORM pg_notify('tern_suppressions', '');
  RETURN NULL;
END $$;
CREATE TRIGGER suppressions_changed AFTER INSERT OR UPDATE OR DELETE ON suppressions
  FOR EACH STATEMENT EXECUTE FUNCTION suppressions_changed();

CREATE TABLE ui_sessions (
  token_hash TEXT PRIMARY KEY,
  csrf TEXT NOT NULL,
  user_address TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL
);
CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);
CREATE INDEX ui_sessions_user ON ui_sessions (user_address, created_at);
CREATE TABLE dash_stats (
  span BIGINT NOT NULL,
  metric TEXT NOT NULL,
  bucket BIGINT NOT NULL,
  key TEXT NOT NULL,
  count BIGINT NOT NULL,
  PRIMARY KEY (span, metric, bucket, key)
);

CREATE TABLE mta_sts_policies (
  domain TEXT PRIMARY KEY,
  policy_id TEXT NOT NULL,
  policy TEXT NOT NULL,
  fetched_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL
);

CREATE TABLE tls_results (
  day TEXT NOT NULL,
  policy_domain TEXT NOT NULL,
  policy_type TEXT NOT NULL,
  policy_strings TEXT NOT NULL,
  mx_hosts TEXT NOT NULL,
  result TEXT NOT NULL,
  mx_host TEXT NOT NULL,
  receiving_ip TEXT NOT NULL,
  sending_ip TEXT NOT NULL,
  count BIGINT NOT NULL,
  reason TEXT NOT NULL,
  PRIMARY KEY (day, policy_domain, policy_type, policy_strings, mx_hosts, result, mx_host, receiving_ip, sending_ip)
);
CREATE TABLE tls_reports (
  day TEXT NOT NULL,
  policy_domain TEXT NOT NULL,
  report_id TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts BIGINT NOT NULL,
  delivered TEXT NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (day, policy_domain)
);
`;

/**
 * Step 2: who holds an outbox row's lease. A node that stalled past its
 * lease (a long GC pause, a frozen VM) may finish its POST after another
 * node has claimed the row again; its result must not delete or reschedule
 * the row the other node now holds (src/store/pg/webhooks.ts).
 */
const STEP_2 = `ALTER TABLE webhook_outbox ADD COLUMN claimed_by TEXT;`;

// Reads by a rare type walk only events of that type (RARE_TYPES in ../store.ts).
const STEP_3 = `CREATE INDEX events_type ON events (type, id) WHERE type NOT IN ('queued', 'delivered');`;

/** Step 4: outbox rows written with their events carry no copy of the payload; claim makes it from events.body (../webhooks.ts). */
const STEP_4 = `ALTER TABLE webhook_outbox ALTER COLUMN body DROP NOT NULL;`;

/**
 * Step 5: each event carries its message's sender domain and base address
 * (senderForms in ../store.ts), indexed with the event id, so an API key's
 * page of events is an ordered index range whatever its share of the mail.
 * Before, a key's events were found by joining every event to its message,
 * in an order the planner chose from its statistics: 219 ms for a page of
 * 100 in one run at a million events (bench/dashboard.ts --postgres,
 * docs/dashboard.md). Existing events get the columns from their messages
 * (one pass over the table, at upgrade); an event whose message row is gone
 * keeps NULLs and is seen only by admin keys, as the join saw it. The
 * partial indexes serve a key's reads by a rare type (?type=bounced: the
 * key's deferrals and bounces in order, a sixth of its events), which
 * otherwise walked every event: 96 ms for the busiest key, 8.6 ms with them.
 */
const STEP_5 = `
ALTER TABLE events ADD COLUMN sender_domain TEXT, ADD COLUMN sender_base TEXT;
UPDATE events e SET sender_domain = m.sender_domain, sender_base = m.sender_base FROM messages m WHERE m.id = e.queue_id;
CREATE INDEX events_sender_domain ON events (sender_domain, id);
CREATE INDEX events_sender_base ON events (sender_base, id);
CREATE INDEX events_sender_domain_rare ON events (sender_domain, id) WHERE type NOT IN ('queued', 'delivered');
CREATE INDEX events_sender_base_rare ON events (sender_base, id) WHERE type NOT IN ('queued', 'delivered');
`;

/** Schema steps; version N is PG_MIGRATIONS[N-1]. Append only, never edit a released step. */
export const PG_MIGRATIONS: readonly string[] = [STEP_1, STEP_2, STEP_3, STEP_4, STEP_5];

/** Brings the database to PG_MIGRATIONS.length; refuses one newer than this Tern. */
export function migrate(db: SyncPgClient): void {
  db.exec('BEGIN');
  try {
    db.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    db.exec('CREATE TABLE IF NOT EXISTS tern_schema_version (version BIGINT NOT NULL)');
    const row = db.one<{ version: number }>('SELECT version FROM tern_schema_version');
    const current = row?.version ?? 0;
    if (current > PG_MIGRATIONS.length) throw new Error(`the PostgreSQL schema is at version ${current}, newer than this Tern (${PG_MIGRATIONS.length})`);
    for (let v = current; v < PG_MIGRATIONS.length; v++) db.exec(PG_MIGRATIONS[v]!);
    if (!row) db.query('INSERT INTO tern_schema_version (version) VALUES ($1)', [PG_MIGRATIONS.length]);
    else if (current < PG_MIGRATIONS.length) db.query('UPDATE tern_schema_version SET version = $1', [PG_MIGRATIONS.length]);
    db.exec('COMMIT');
  } catch (e) {
    db.exec('ROLLBACK');
    throw e;
  }
}
