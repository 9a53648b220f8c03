// Embedded state on node:sqlite. Callers see only the `UserStore` interface,
// so a shared database (PostgreSQL, for several Tern nodes) can serve it
// later. One file, <dataDir>/tern.db, in WAL mode: the server and the `tern`
// CLI open it at the same time, readers never block the writer, and a busy
// timeout turns the rare writer/writer collision into a short wait.

import fs from 'node:fs';
import path from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';

export interface UserRecord {
  /** Lower-case local@domain; the login name (RFC 4954 authcid). */
  address: string;
  /** PHC string from passwords.ts; never printed. */
  passwordHash: string;
  /** Addresses or '@domain' patterns the user may send as (RFC 6409 §8.1); the own address is always allowed. */
  sendAs: string[];
  messagesPerHour?: number | undefined;
  recipientsPerMessage?: number | undefined;
  /** Epoch milliseconds. */
  createdAt: number;
}

export interface UserStore {
  /** `address` is matched case-insensitively. */
  getUser(address: string): UserRecord | null;
  /** Insert or replace (the address is lower-cased). */
  putUser(u: UserRecord): void;
  deleteUser(address: string): boolean;
  /** Sorted by address. */
  listUsers(): UserRecord[];
  close(): void;
}

/** One greylisting triplet's state (policy/greylist.ts owns the meaning). Times are epoch ms. */
export interface GreylistEntry {
  /** The first attempt of the current round. */
  firstSeen: number;
  /** When a retry was let through; null while the triplet is still waiting. */
  passedAt: number | null;
  /** When the entry may be forgotten. */
  expires: number;
}

export interface GreylistStore {
  getGreylist(triplet: string): GreylistEntry | null;
  putGreylist(triplet: string, e: GreylistEntry): void;
  /** Forget entries that expired before `now`; returns how many went. */
  expireGreylist(now: number): number;
}

/** Everything the embedded database holds. */
export interface Store extends UserStore, GreylistStore {}

export const STORE_FILE = 'tern.db';
/** How long a writer waits for another process's write lock before SQLITE_BUSY. */
export const BUSY_TIMEOUT_MS = 5000;

/** Schema steps; version N is MIGRATIONS[N-1]. Append only, never edit a released step. */
const MIGRATIONS: string[] = [
  `CREATE TABLE users (
     address TEXT PRIMARY KEY NOT NULL,
     password_hash TEXT NOT NULL,
     send_as TEXT NOT NULL DEFAULT '[]',
     messages_per_hour INTEGER,
     recipients_per_message INTEGER,
     created_at INTEGER NOT NULL
   ) STRICT`,
  `CREATE TABLE greylist (
     triplet TEXT PRIMARY KEY NOT NULL,
     first_seen INTEGER NOT NULL,
     passed_at INTEGER,
     expires INTEGER NOT NULL
   ) STRICT;
   CREATE INDEX greylist_expires ON greylist (expires)`,
];

interface UserRow {
  address: string;
  password_hash: string;
  send_as: string;
  messages_per_hour: number | null;
  recipients_per_message: number | null;
  created_at: number;
}

export function openStore(dataDir: string): Store {
  fs.mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, STORE_FILE);
  // The file holds password hashes: create it owner-only before SQLite does
  // (an empty file is a valid empty database; -wal/-shm copy its mode).
  fs.closeSync(fs.openSync(file, 'a', 0o600));
  const db = new DatabaseSync(file, { timeout: BUSY_TIMEOUT_MS });
  try {
    db.exec('PRAGMA journal_mode = WAL');
    migrate(db);
  } catch (e) {
    db.close();
    throw e;
  }
  return new SqliteStore(db);
}

function migrate(db: DatabaseSync): void {
  // BEGIN IMMEDIATE takes the write lock first, so two processes opening a
  // fresh database at once cannot both run the same step.
  db.exec('BEGIN IMMEDIATE');
  try {
    db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
    const row = db.prepare('SELECT version FROM schema_version').get() as { version: number } | undefined;
    const current = row?.version ?? 0;
    if (current > MIGRATIONS.length) throw new Error(`${STORE_FILE}: schema version ${current} is newer than this Tern (${MIGRATIONS.length})`);
    for (let v = current; v < MIGRATIONS.length; v++) db.exec(MIGRATIONS[v]!);
    if (!row) db.prepare('INSERT INTO schema_version (version) VALUES (?)').run(MIGRATIONS.length);
    else if (current < MIGRATIONS.length) db.prepare('UPDATE schema_version SET version = ?').run(MIGRATIONS.length);
    db.exec('COMMIT');
  } catch (e) {
    db.exec('ROLLBACK');
    throw e;
  }
}

class SqliteStore implements Store {
  #db: DatabaseSync;
  #get: StatementSync;
  #put: StatementSync;
  #del: StatementSync;
  #list: StatementSync;
  #glGet: StatementSync;
  #glPut: StatementSync;
  #glExpire: StatementSync;

  constructor(db: DatabaseSync) {
    this.#db = db;
    this.#get = db.prepare('SELECT * FROM users WHERE address = ?');
    this.#put = db.prepare(
      `INSERT OR REPLACE INTO users (address, password_hash, send_as, messages_per_hour, recipients_per_message, created_at)
       VALUES (?, ?, ?, ?, ?, ?)`,
    );
    this.#del = db.prepare('DELETE FROM users WHERE address = ?');
    this.#list = db.prepare('SELECT * FROM users ORDER BY address');
    this.#glGet = db.prepare('SELECT first_seen, passed_at, expires FROM greylist WHERE triplet = ?');
    this.#glPut = db.prepare('INSERT OR REPLACE INTO greylist (triplet, first_seen, passed_at, expires) VALUES (?, ?, ?, ?)');
    this.#glExpire = db.prepare('DELETE FROM greylist WHERE expires < ?');
  }

  getGreylist(triplet: string): GreylistEntry | null {
    const row = this.#glGet.get(triplet) as { first_seen: number; passed_at: number | null; expires: number } | undefined;
    return row ? { firstSeen: row.first_seen, passedAt: row.passed_at, expires: row.expires } : null;
  }

  putGreylist(triplet: string, e: GreylistEntry): void {
    this.#glPut.run(triplet, e.firstSeen, e.passedAt, e.expires);
  }

  expireGreylist(now: number): number {
    return Number(this.#glExpire.run(now).changes);
  }

  getUser(address: string): UserRecord | null {
    const row = this.#get.get(address.toLowerCase()) as UserRow | undefined;
    return row ? fromRow(row) : null;
  }

  putUser(u: UserRecord): void {
    this.#put.run(u.address.toLowerCase(), u.passwordHash, JSON.stringify(u.sendAs), u.messagesPerHour ?? null, u.recipientsPerMessage ?? null, u.createdAt);
  }

  deleteUser(address: string): boolean {
    return Number(this.#del.run(address.toLowerCase()).changes) > 0;
  }

  listUsers(): UserRecord[] {
    return (this.#list.all() as unknown as UserRow[]).map(fromRow);
  }

  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }
}

function fromRow(r: UserRow): UserRecord {
  return {
    address: r.address,
    passwordHash: r.password_hash,
    sendAs: JSON.parse(r.send_as) as string[],
    messagesPerHour: r.messages_per_hour ?? undefined,
    recipientsPerMessage: r.recipients_per_message ?? undefined,
    createdAt: r.created_at,
  };
}
