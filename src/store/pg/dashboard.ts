// PostgreSQL implementation of DashboardStore (src/store/dashboard.ts). Placeholder: being built (issue 17).
import type { SyncPgClient } from './sync-client.ts';
import type { Transaction } from './tx.ts';
import type { DashboardStore } from '../dashboard.ts';

export function pgDashboardStore(_db: SyncPgClient, _tx: Transaction): DashboardStore {
  throw new Error('the PostgreSQL dashboard store is not built yet');
}
