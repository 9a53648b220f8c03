// PostgreSQL implementation of TlsReportStore (src/store/tls-reports.ts). Placeholder: being built (issue 17).
import type { SyncPgClient } from './sync-client.ts';
import type { Transaction } from './tx.ts';
import type { TlsReportStore } from '../tls-reports.ts';

export function pgTlsReportStore(_db: SyncPgClient, _tx: Transaction): TlsReportStore {
  throw new Error('the PostgreSQL TLS-RPT store is not built yet');
}
