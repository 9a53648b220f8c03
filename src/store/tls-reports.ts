// TLS-RPT (RFC 8460) state: the outcome counts of outbound TLS negotiations
// per day and policy, and what became of each daily report. The meaning
// lives in src/tlsrpt/; this file only stores rows. (Owned by the TLS-RPT
// work of issue 15, which may reshape these tables until they are released.)

import type { DatabaseSync, StatementSync } from 'node:sqlite';

/**
 * Schema step 13 of store.ts's MIGRATIONS.
 *
 * tls_results: one row per (UTC day, policy, outcome, where). The policy is
 * its type and its strings and mx patterns as JSON arrays (RFC 8460 §4.4: a
 * domain whose policy changed during the day gets one "policies" entry per
 * version). Successful sessions are kept per policy only (mx_host,
 * receiving_ip and sending_ip are ''), since the report sums them (§4.4
 * "summary"); failures keep where they happened, for "failure-details".
 * The primary key starts with the day, so a day's rows and the expiry of
 * old days are range scans.
 *
 * tls_reports: one row per (day, policy domain) once the reporter has dealt
 * with it. report_id is made once and kept, so a retry sends the same
 * report-id (receivers may use it to drop duplicates); delivered lists the
 * rua URIs that took the report, so a retry goes only to the others.
 */
export const TLS_REPORT_SCHEMA = `CREATE TABLE tls_results (
     day TEXT NOT NULL,
     policy_domain TEXT NOT NULL,
     policy_type TEXT NOT NULL,
     policy_strings TEXT NOT NULL,
     mx_hosts TEXT NOT NULL,
     result TEXT NOT NULL,
     mx_host TEXT NOT NULL,
     receiving_ip TEXT NOT NULL,
     sending_ip TEXT NOT NULL,
     count INTEGER NOT NULL,
     reason TEXT NOT NULL,
     PRIMARY KEY (day, policy_domain, policy_type, policy_strings, mx_hosts, result, mx_host, receiving_ip, sending_ip)
   ) STRICT, WITHOUT ROWID;
   CREATE TABLE tls_reports (
     day TEXT NOT NULL,
     policy_domain TEXT NOT NULL,
     report_id TEXT NOT NULL,
     state TEXT NOT NULL,
     attempts INTEGER NOT NULL,
     delivered TEXT NOT NULL,
     updated_at INTEGER NOT NULL,
     PRIMARY KEY (day, policy_domain)
   ) STRICT, WITHOUT ROWID`;

/** One aggregated count: `count` sessions of one day with the same policy and outcome. */
export interface TlsResultRow {
  /** UTC day, `YYYY-MM-DD`. */
  day: string;
  /** Lower case. */
  policyDomain: string;
  /** RFC 8460 §4.4 policy-type: sts, tlsa, no-policy-found. */
  policyType: string;
  policyStrings: string[];
  mxHosts: string[];
  /** 'success' or an RFC 8460 §4.3 result type. */
  result: string;
  /** '' on success rows, and when no MX was reached. */
  mxHost: string;
  receivingIp: string;
  sendingIp: string;
  count: number;
  /** The last failure-reason-code seen for this row; '' when none. */
  reason: string;
}

/**
 * What became of one day's report for one policy domain.
 * pending: some rua still to try (delivered lists those done);
 * sent: every rua took it; failed: given up after the retries;
 * no-rua: the domain publishes no usable `_smtp._tls` record (RFC 8460 §3).
 */
export type TlsReportStateName = 'pending' | 'sent' | 'failed' | 'no-rua';

export interface TlsReportState {
  day: string;
  policyDomain: string;
  reportId: string;
  state: TlsReportStateName;
  /** Runs that tried to send it. */
  attempts: number;
  /** rua URIs (as published) that accepted the report. */
  delivered: string[];
  /** Epoch ms. */
  updatedAt: number;
}

export interface TlsReportStore {
  /** Adds the counts (and replaces the reason, when the new one is not '') in one transaction. */
  addResults(rows: TlsResultRow[]): void;
  /** A day's rows for one policy domain, in primary-key order. */
  results(day: string, policyDomain: string): TlsResultRow[];
  /** Policy domains with rows on `day` whose report is not finished (no state yet, or pending), sorted. */
  unreported(day: string): string[];
  /** Days before `beforeDay` (exclusive) that have rows, oldest first. */
  daysWithResults(fromDay: string, beforeDay: string): string[];
  report(day: string, policyDomain: string): TlsReportState | null;
  /** Insert or replace. */
  putReport(s: TlsReportState): void;
  /**
   * Takes the report of `day` for `policyDomain` for one attempt, atomically
   * (with several nodes sharing the store, only one sends it): with no state
   * yet it is inserted pending with `reportId` and 1 attempt; a pending one
   * last written before `staleBefore` (epoch ms) counts one more attempt.
   * Returns the state (updatedAt = now), or null when the report is finished
   * or was written since `staleBefore` (another node is at it). Every
   * putReport refreshes updatedAt, which holds the claim like a lease.
   */
  claimReport(day: string, policyDomain: string, reportId: string, now: number, staleBefore: number): TlsReportState | null;
  /** Deletes the rows and report states of days before `beforeDay`; returns how many rows went. */
  expire(beforeDay: string): number;
}

/** Rows as both stores read them (src/store/pg/tls-reports.ts reads the same columns). */
export interface ResultRow {
  day: string;
  policy_domain: string;
  policy_type: string;
  policy_strings: string;
  mx_hosts: string;
  result: string;
  mx_host: string;
  receiving_ip: string;
  sending_ip: string;
  count: number;
  reason: string;
}

export interface ReportRow {
  day: string;
  policy_domain: string;
  report_id: string;
  state: string;
  attempts: number;
  delivered: string;
  updated_at: number;
}

const STATES: readonly string[] = ['pending', 'sent', 'failed', 'no-rua'] satisfies TlsReportStateName[];

export class SqliteTlsReportStore implements TlsReportStore {
  readonly #transaction: <T>(fn: () => T) => T;
  readonly #add: StatementSync;
  readonly #results: StatementSync;
  readonly #unreported: StatementSync;
  readonly #days: StatementSync;
  readonly #report: StatementSync;
  readonly #putReport: StatementSync;
  readonly #claim: StatementSync;
  readonly #expireResults: StatementSync;
  readonly #expireReports: StatementSync;

  constructor(db: DatabaseSync, transaction: <T>(fn: () => T) => T) {
    this.#transaction = transaction;
    this.#add = db.prepare(
      `INSERT INTO tls_results (day, policy_domain, policy_type, policy_strings, mx_hosts, result, mx_host, receiving_ip, sending_ip, count, reason)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT DO UPDATE SET count = count + excluded.count,
         reason = CASE WHEN excluded.reason = '' THEN reason ELSE excluded.reason END`,
    );
    this.#results = db.prepare('SELECT * FROM tls_results WHERE day = ? AND policy_domain = ?');
    this.#unreported = db.prepare(
      `SELECT DISTINCT r.policy_domain AS d FROM tls_results r
       WHERE r.day = ? AND NOT EXISTS (
         SELECT 1 FROM tls_reports s WHERE s.day = r.day AND s.policy_domain = r.policy_domain AND s.state != 'pending')
       ORDER BY d`,
    );
    this.#days = db.prepare('SELECT DISTINCT day FROM tls_results WHERE day >= ? AND day < ? ORDER BY day');
    this.#report = db.prepare('SELECT * FROM tls_reports WHERE day = ? AND policy_domain = ?');
    this.#putReport = db.prepare(
      `INSERT OR REPLACE INTO tls_reports (day, policy_domain, report_id, state, attempts, delivered, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
    );
    this.#claim = db.prepare(
      `INSERT INTO tls_reports (day, policy_domain, report_id, state, attempts, delivered, updated_at) VALUES (?, ?, ?, 'pending', 1, '[]', ?)
       ON CONFLICT (day, policy_domain) DO UPDATE SET attempts = attempts + 1, updated_at = excluded.updated_at
         WHERE state = 'pending' AND updated_at < ?
       RETURNING *`,
    );
    this.#expireResults = db.prepare('DELETE FROM tls_results WHERE day < ?');
    this.#expireReports = db.prepare('DELETE FROM tls_reports WHERE day < ?');
  }

  addResults(rows: TlsResultRow[]): void {
    if (rows.length === 0) return;
    this.#transaction(() => {
      for (const r of rows) {
        this.#add.run(r.day, r.policyDomain, r.policyType, JSON.stringify(r.policyStrings), JSON.stringify(r.mxHosts), r.result, r.mxHost, r.receivingIp, r.sendingIp, r.count, r.reason);
      }
    });
  }

  results(day: string, policyDomain: string): TlsResultRow[] {
    return (this.#results.all(day, policyDomain) as unknown as ResultRow[]).map(resultOf);
  }

  unreported(day: string): string[] {
    return (this.#unreported.all(day) as { d: string }[]).map((r) => r.d);
  }

  daysWithResults(fromDay: string, beforeDay: string): string[] {
    return (this.#days.all(fromDay, beforeDay) as { day: string }[]).map((r) => r.day);
  }

  claimReport(day: string, policyDomain: string, reportId: string, now: number, staleBefore: number): TlsReportState | null {
    const r = this.#claim.get(day, policyDomain, reportId, now, staleBefore) as ReportRow | undefined;
    return r ? reportStateOf(r) : null;
  }

  report(day: string, policyDomain: string): TlsReportState | null {
    const r = this.#report.get(day, policyDomain) as ReportRow | undefined;
    return r ? reportStateOf(r) : null;
  }

  putReport(s: TlsReportState): void {
    this.#putReport.run(s.day, s.policyDomain, s.reportId, s.state, s.attempts, JSON.stringify(s.delivered), s.updatedAt);
  }

  expire(beforeDay: string): number {
    return this.#transaction(() => {
      const n = Number(this.#expireResults.run(beforeDay).changes);
      this.#expireReports.run(beforeDay);
      return n;
    });
  }
}

export function resultOf(r: ResultRow): TlsResultRow {
  return {
    day: r.day,
    policyDomain: r.policy_domain,
    policyType: r.policy_type,
    policyStrings: stringArray(r.policy_strings),
    mxHosts: stringArray(r.mx_hosts),
    result: r.result,
    mxHost: r.mx_host,
    receivingIp: r.receiving_ip,
    sendingIp: r.sending_ip,
    count: r.count,
    reason: r.reason,
  };
}

export function reportStateOf(r: ReportRow): TlsReportState {
  // A state written by something newer (or by hand) reads as finished: never a second send.
  const state = (STATES.includes(r.state) ? r.state : 'failed') as TlsReportStateName;
  return { day: r.day, policyDomain: r.policy_domain, reportId: r.report_id, state, attempts: r.attempts, delivered: stringArray(r.delivered), updatedAt: r.updated_at };
}

/** A JSON array of strings as stored; anything else (a hand edit) reads as []. */
function stringArray(json: string): string[] {
  try {
    const v: unknown = JSON.parse(json);
    return Array.isArray(v) ? v.filter((s): s is string => typeof s === 'string') : [];
  } catch {
    return [];
  }
}
