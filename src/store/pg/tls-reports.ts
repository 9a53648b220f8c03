// PostgreSQL implementation of TlsReportStore (src/store/tls-reports.ts says
// what the tables hold). The statements are the embedded store's, ported;
// what differs comes from several nodes counting the same sessions' kind
// and running the same daily reporter:
//
// - addResults is one INSERT … ON CONFLICT DO UPDATE for the whole batch,
//   adding to the stored count (count = tls_results.count + EXCLUDED.count),
//   so two nodes adding to one row both land: the second waits for the
//   first's row lock and then adds to the committed value (PostgreSQL docs,
//   INSERT, "ON CONFLICT Clause": an atomic insert-or-update outcome). A row
//   may appear only once in such a statement, so the batch's repeats are
//   summed here first; rows go in key order, so two nodes' batches lock
//   shared rows in the same order and cannot deadlock.
// - claimReport lets one node, and only one,
//   take a day's report for a domain: a conditional upsert that inserts the
//   pending state or counts a new attempt on a pending one that nobody has
//   touched lately, and returns the row only when it did.
// - Sorted lists compare domains byte-wise (COLLATE "C"), as SQLite's BINARY
//   collation does; days are fixed-width digits, in the same order under
//   any collation, so their comparisons keep the primary key's index.

import type { SyncPgClient } from './sync-client.ts';
import type { Transaction } from './tx.ts';
import { reportStateOf, resultOf, type ReportRow, type ResultRow, type TlsReportStore, type TlsResultRow } from '../tls-reports.ts';

const REPORT_COLUMNS = 'day, policy_domain, report_id, state, attempts, delivered, updated_at';

/** One tls_results row as stored: the primary key's nine columns, then count and reason. */
type Stored = [string, string, string, string, string, string, string, string, string, number, string];

export function pgTlsReportStore(db: SyncPgClient, tx: Transaction): TlsReportStore {
  return {
    addResults(rows) {
      if (rows.length === 0) return;
      const merged = mergeByKey(rows);
      const column = (i: number) => merged.map((r) => r[i]);
      db.query(
        `INSERT INTO tls_results (day, policy_domain, policy_type, policy_strings, mx_hosts, result, mx_host, receiving_ip, sending_ip, count, reason)
         SELECT day, policy_domain, policy_type, policy_strings, mx_hosts, result, mx_host, receiving_ip, sending_ip, count, reason
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[])
           WITH ORDINALITY AS r (day, policy_domain, policy_type, policy_strings, mx_hosts, result, mx_host, receiving_ip, sending_ip, count, reason, i)
         ORDER BY i
         ON CONFLICT (day, policy_domain, policy_type, policy_strings, mx_hosts, result, mx_host, receiving_ip, sending_ip) DO UPDATE
           SET count = tls_results.count + EXCLUDED.count,
               reason = CASE WHEN EXCLUDED.reason = '' THEN tls_results.reason ELSE EXCLUDED.reason END`,
        Array.from({ length: 11 }, (_, i) => column(i)),
      );
    },

    results(day, policyDomain) {
      return db
        .rows<ResultRow>(
          `SELECT * FROM tls_results WHERE day = $1 AND policy_domain = $2
           ORDER BY policy_type COLLATE "C", policy_strings COLLATE "C", mx_hosts COLLATE "C", result COLLATE "C",
             mx_host COLLATE "C", receiving_ip COLLATE "C", sending_ip COLLATE "C"`,
          [day, policyDomain],
        )
        .map(resultOf);
    },

    unreported(day) {
      return db
        .rows<{ d: string }>(
          `SELECT DISTINCT r.policy_domain COLLATE "C" AS d FROM tls_results r
           WHERE r.day = $1 AND NOT EXISTS (
             SELECT 1 FROM tls_reports s WHERE s.day = r.day AND s.policy_domain = r.policy_domain AND s.state <> 'pending')
           ORDER BY d`,
          [day],
        )
        .map((r) => r.d);
    },

    daysWithResults(fromDay, beforeDay) {
      return db.rows<{ day: string }>('SELECT DISTINCT day FROM tls_results WHERE day >= $1 AND day < $2 ORDER BY day', [fromDay, beforeDay]).map((r) => r.day);
    },

    report(day, policyDomain) {
      const r = db.one<ReportRow>(`SELECT ${REPORT_COLUMNS} FROM tls_reports WHERE day = $1 AND policy_domain = $2`, [day, policyDomain]);
      return r ? reportStateOf(r) : null;
    },

    putReport(s) {
      db.query(
        `INSERT INTO tls_reports (${REPORT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (day, policy_domain) DO UPDATE SET report_id = EXCLUDED.report_id, state = EXCLUDED.state,
           attempts = EXCLUDED.attempts, delivered = EXCLUDED.delivered, updated_at = EXCLUDED.updated_at`,
        [s.day, s.policyDomain, s.reportId, s.state, s.attempts, JSON.stringify(s.delivered), s.updatedAt],
      );
    },

    claimReport(day, policyDomain, reportId, now, staleBefore) {
      // One statement: a concurrent claim of the same row waits for this one's row lock, then re-checks the
      // WHERE against the row as this one left it (READ COMMITTED: PostgreSQL docs, "Transaction Isolation"), and fails.
      const r = db.one<ReportRow>(
        `INSERT INTO tls_reports (${REPORT_COLUMNS}) VALUES ($1, $2, $3, 'pending', 1, '[]', $4)
         ON CONFLICT (day, policy_domain) DO UPDATE SET attempts = tls_reports.attempts + 1, updated_at = EXCLUDED.updated_at
           WHERE tls_reports.state = 'pending' AND tls_reports.updated_at < $5
         RETURNING ${REPORT_COLUMNS}`,
        [day, policyDomain, reportId, now, staleBefore],
      );
      return r ? reportStateOf(r) : null;
    },

    expire(beforeDay) {
      return tx(() => {
        const n = db.query('DELETE FROM tls_results WHERE day < $1', [beforeDay]).rowCount;
        db.query('DELETE FROM tls_reports WHERE day < $1', [beforeDay]);
        return n;
      });
    },
  };
}

/**
 * The rows as stored, one per primary key: counts of a repeated key summed,
 * its last non-empty reason kept (what row-by-row upserts would leave), in
 * key order.
 */
function mergeByKey(rows: TlsResultRow[]): Stored[] {
  const byKey = new Map<string, Stored>();
  for (const r of rows) {
    const stored: Stored = [r.day, r.policyDomain, r.policyType, JSON.stringify(r.policyStrings), JSON.stringify(r.mxHosts), r.result, r.mxHost, r.receivingIp, r.sendingIp, r.count, r.reason];
    const key = JSON.stringify(stored.slice(0, 9));
    const prior = byKey.get(key);
    if (!prior) byKey.set(key, stored);
    else {
      prior[9] += r.count;
      if (r.reason !== '') prior[10] = r.reason;
    }
  }
  // Any order both nodes share would do: the key's JSON, compared by code unit.
  return [...byKey.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, s]) => s);
}

