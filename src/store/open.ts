// The store a config names: PostgreSQL when `store.postgres` is set (several
// nodes sharing state, issue 17), else the embedded node:sqlite file in
// dataDir. The server and the `tern` commands that change state (user,
// apikey, suppression) open it the same way, so a user added with the CLI on
// any node is seen by every node.

import { openStore, type Store } from './store.ts';
import { openPgStore } from './pg/store.ts';
import { DkimKeys, type DkimKeySource } from '../intake/dkim.ts';
import { StoreDkimKeys } from '../intake/dkim-store.ts';

export function openConfiguredStore(config: { dataDir: string; store: { postgres?: string | undefined } }): Store {
  return config.store.postgres ? openPgStore(config.store.postgres) : openStore(config.dataDir);
}

/** Signing keys: the shared store's when it has them, else the files of this node's dataDir/dkim/. */
export function dkimKeySource(config: { dataDir: string }, store: Pick<Store, 'dkimKeys'> | null): DkimKeySource {
  return store?.dkimKeys ? new StoreDkimKeys(store.dkimKeys) : new DkimKeys(config.dataDir);
}
