// Both store implementations for the store tests (issue 17: "run the store's
// whole test suite against both"): the embedded node:sqlite store in a fresh
// directory, and the PostgreSQL store in a fresh database of a private
// cluster (test/helpers/postgres.ts) that this module starts before the
// file's tests and removes after them. Opening is synchronous for both,
// like openStore: the databases are made through SyncPgClient.
//
//   for (const kind of storeKinds()) {
//     describe(`users (${kind.name})`, { skip: kind.skip }, () => {
//       it('…', () => { const store = kind.open(); … store.close(); });
//     });
//   }

import { after, before } from 'node:test';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openStore, type Store } from '../../src/store/store.ts';
import { openPgStore } from '../../src/store/pg/store.ts';
import { SyncPgClient } from '../../src/store/pg/sync-client.ts';
import { migrate } from '../../src/store/pg/schema.ts';
import { requirePostgres, startPostgres, type PgCluster } from './postgres.ts';

export interface StoreKind {
  name: 'sqlite' | 'postgres';
  /** The skip reason (PostgreSQL not installed), or false. */
  skip: string | false;
  /** A fresh, empty store. */
  open(): Store;
  /** Runs `fn` on a fresh, empty store, closed afterwards. */
  withStore(fn: (store: Store) => void): void;
  /** A new empty place for a store: a directory (sqlite) or a database URL (postgres), for tests that open it more than once. */
  location(): string;
  /** A store at `location` (made or migrated as needed), like opening it from another process or node. */
  openAt(location: string): Store;
  /** A fresh, migrated database, for tests of one part (postgres only). */
  database(): SyncPgClient;
}

const pgSkip = requirePostgres();
let cluster: PgCluster | undefined;
let admin: SyncPgClient | undefined;
let made = 0;
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-stores-'));

before(async () => {
  if (pgSkip) return;
  cluster = await startPostgres();
  admin = new SyncPgClient(cluster.url);
});

after(async () => {
  admin?.close();
  await cluster?.destroy();
  fs.rmSync(root, { recursive: true, force: true });
});

/** A new empty database; its URL. */
function freshDatabase(): string {
  if (!cluster || !admin) throw new Error('the PostgreSQL cluster is not running (call only from tests, after the before hook)');
  const name = `t_${process.pid}_${made++}`;
  admin.exec(`CREATE DATABASE ${name}`);
  return cluster.url.replace(/\/postgres$/, `/${name}`);
}

/** Runs `fn` on `open()`'s store and closes it, whatever `fn` does. */
function withFresh(open: () => Store): (fn: (store: Store) => void) => void {
  return (fn) => {
    const store = open();
    try {
      fn(store);
    } finally {
      store.close();
    }
  };
}

export function storeKinds(): StoreKind[] {
  const sqlite = (): Store => openStore(path.join(root, `d${made++}`));
  const postgres = (): Store => openPgStore(freshDatabase());
  return [
    {
      name: 'sqlite',
      skip: false,
      open: sqlite,
      withStore: withFresh(sqlite),
      location: () => path.join(root, `d${made++}`),
      openAt: (dir) => openStore(dir),
      database: () => {
        throw new Error('database() is for the postgres kind');
      },
    },
    {
      name: 'postgres',
      skip: pgSkip,
      open: postgres,
      withStore: withFresh(postgres),
      location: freshDatabase,
      openAt: (url) => openPgStore(url),
      database: () => {
        const db = new SyncPgClient(freshDatabase());
        migrate(db);
        return db;
      },
    },
  ];
}
