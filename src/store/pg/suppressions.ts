// PostgreSQL implementation of SuppressionStore (src/store/suppressions.ts). Placeholder: being built (issue 17).
import type { SyncPgClient } from './sync-client.ts';
import type { SuppressionStore } from '../suppressions.ts';

export function pgSuppressionStore(_db: SyncPgClient): SuppressionStore {
  throw new Error('the PostgreSQL suppression store is not built yet');
}
