// The PostgreSQL store (issue 17, `store: { postgres: URL }`): the Store
// interface of src/store/store.ts over a shared database, for several Tern
// nodes. Each part is its own file, like the embedded store's. Placeholder
// for the main tables: being built.

import type { Store } from '../store.ts';
import { SyncPgClient } from './sync-client.ts';
import { migrate } from './schema.ts';

export function openPgStore(url: string): Store {
  const db = new SyncPgClient(url);
  try {
    migrate(db);
  } catch (e) {
    db.close();
    throw e;
  }
  db.close();
  throw new Error('the PostgreSQL store is not built yet');
}
