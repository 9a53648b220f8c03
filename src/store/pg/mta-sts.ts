// PostgreSQL implementation of MtaStsStore (src/store/mta-sts.ts). Placeholder: being built (issue 17).
import type { SyncPgClient } from './sync-client.ts';
import type { MtaStsStore } from '../mta-sts.ts';

export function pgMtaStsStore(_db: SyncPgClient): MtaStsStore {
  throw new Error('the PostgreSQL MTA-STS store is not built yet');
}
