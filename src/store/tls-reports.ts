// TLS-RPT (RFC 8460) state: the outcome counts of outbound TLS negotiations
// per day and policy, and which daily reports went out. The meaning lives in
// src/tlsrpt/; this file only stores rows. (Owned by the TLS-RPT work of
// issue 15, which may reshape these tables until they are released.)

import type { DatabaseSync } from 'node:sqlite';

/** Schema step 13 of store.ts's MIGRATIONS. */
export const TLS_REPORT_SCHEMA = `CREATE TABLE tls_results (
     day TEXT NOT NULL,
     policy_domain TEXT NOT NULL,
     policy_type TEXT NOT NULL,
     policy_string TEXT NOT NULL,
     mx_host TEXT NOT NULL,
     receiving_ip TEXT NOT NULL,
     result TEXT NOT NULL,
     count INTEGER NOT NULL,
     PRIMARY KEY (day, policy_domain, policy_type, policy_string, mx_host, receiving_ip, result)
   ) STRICT, WITHOUT ROWID;
   CREATE TABLE tls_reports_sent (
     day TEXT NOT NULL,
     policy_domain TEXT NOT NULL,
     report_id TEXT NOT NULL,
     sent_at INTEGER NOT NULL,
     PRIMARY KEY (day, policy_domain)
   ) STRICT, WITHOUT ROWID`;

export interface TlsReportStore {}

export class SqliteTlsReportStore implements TlsReportStore {
  readonly #db: DatabaseSync;
  constructor(db: DatabaseSync, _transaction: <T>(fn: () => T) => T) {
    this.#db = db;
    void this.#db;
  }
}
