// The TLS-RPT aggregate report (RFC 8460 §4): one policy domain, one whole
// UTC day, built from the stored counts. Pure: no clock, no I/O, so the
// same rows always give the same report (a retry resends what was sent).

import zlib from 'node:zlib';
import type { TlsResultRow } from '../store/tls-reports.ts';

/** RFC 8460 §4.4 "failure-details" entry. Optional fields are left out when we do not know them. */
export interface TlsReportFailureJson {
  'result-type': string;
  'sending-mta-ip'?: string;
  'receiving-mx-hostname'?: string;
  'receiving-ip'?: string;
  'failed-session-count': number;
  'failure-reason-code'?: string;
}

/** RFC 8460 §4.4 "policies" entry. */
export interface TlsReportPolicyJson {
  policy: {
    'policy-type': string;
    /** Absent for no-policy-found (there is no policy to quote). */
    'policy-string'?: string[];
    'policy-domain': string;
    /** The MTA-STS policy's mx patterns; absent for the other types. */
    'mx-host'?: string[];
  };
  summary: {
    'total-successful-session-count': number;
    'total-failure-session-count': number;
  };
  /** Absent when nothing failed. */
  'failure-details'?: TlsReportFailureJson[];
}

/** RFC 8460 §4.4, the top level. */
export interface TlsReportJson {
  'organization-name': string;
  'date-range': { 'start-datetime': string; 'end-datetime': string };
  'contact-info': string;
  'report-id': string;
  policies: TlsReportPolicyJson[];
}

export interface TlsReportMeta {
  organization: string;
  contact: string;
  reportId: string;
  /** The UTC day, `YYYY-MM-DD`. */
  day: string;
}

const DAY_MS = 86_400_000;

/**
 * The day's bounds in epoch ms: its first millisecond and its last second,
 * as RFC 8460 §4.1 asks for a whole UTC day and its example ends the range
 * at 23:59:59Z. Throws on a malformed day.
 */
export function dayBounds(day: string): { start: number; end: number } {
  const start = Date.parse(`${day}T00:00:00Z`);
  if (!/^\d{4}-\d{2}-\d{2}$/.test(day) || Number.isNaN(start) || new Date(start).toISOString().slice(0, 10) !== day) throw new Error(`not a UTC day: ${day}`);
  return { start, end: start + DAY_MS - 1000 };
}

/** RFC 3339 date-time in UTC, whole seconds (`2026-12-06T00:00:00Z`). */
function rfc3339(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * The report for `meta.day` from that day's rows of one policy domain
 * (store.results). One "policies" entry per distinct policy (a policy that
 * changed during the day is two), in a stable order; failure details
 * sorted by result type, MX host, receiving and sending address.
 */
export function buildReport(meta: TlsReportMeta, rows: readonly TlsResultRow[]): TlsReportJson {
  const { start, end } = dayBounds(meta.day);
  const policies = new Map<string, { json: TlsReportPolicyJson; failures: TlsReportFailureJson[] }>();
  for (const r of rows) {
    if (r.day !== meta.day || r.count <= 0) continue;
    const key = JSON.stringify([r.policyType, r.policyDomain, r.policyStrings, r.mxHosts]);
    let p = policies.get(key);
    if (p === undefined) {
      // Spreads, not assignments, so the fields keep RFC 8460 §4.4's order in the JSON text.
      const policy: TlsReportPolicyJson['policy'] = {
        'policy-type': r.policyType,
        ...(r.policyStrings.length > 0 ? { 'policy-string': [...r.policyStrings] } : {}),
        'policy-domain': r.policyDomain,
        ...(r.mxHosts.length > 0 ? { 'mx-host': [...r.mxHosts] } : {}),
      };
      p = { json: { policy, summary: { 'total-successful-session-count': 0, 'total-failure-session-count': 0 } }, failures: [] };
      policies.set(key, p);
    }
    if (r.result === 'success') {
      p.json.summary['total-successful-session-count'] += r.count;
      continue;
    }
    p.json.summary['total-failure-session-count'] += r.count;
    p.failures.push({
      'result-type': r.result,
      ...(r.sendingIp ? { 'sending-mta-ip': r.sendingIp } : {}),
      ...(r.mxHost ? { 'receiving-mx-hostname': r.mxHost } : {}),
      ...(r.receivingIp ? { 'receiving-ip': r.receivingIp } : {}),
      'failed-session-count': r.count,
      ...(r.reason ? { 'failure-reason-code': r.reason } : {}),
    });
  }
  const out: TlsReportPolicyJson[] = [];
  for (const key of [...policies.keys()].sort()) {
    const p = policies.get(key)!;
    if (p.failures.length > 0) p.json['failure-details'] = p.failures.sort(byPlace);
    out.push(p.json);
  }
  return {
    'organization-name': meta.organization,
    'date-range': { 'start-datetime': rfc3339(start), 'end-datetime': rfc3339(end) },
    'contact-info': meta.contact,
    'report-id': meta.reportId,
    policies: out,
  };
}

function byPlace(a: TlsReportFailureJson, b: TlsReportFailureJson): number {
  const ka = [a['result-type'], a['receiving-mx-hostname'] ?? '', a['receiving-ip'] ?? '', a['sending-mta-ip'] ?? ''];
  const kb = [b['result-type'], b['receiving-mx-hostname'] ?? '', b['receiving-ip'] ?? '', b['sending-mta-ip'] ?? ''];
  for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return ka[i]! < kb[i]! ? -1 : 1;
  return 0;
}

/** The report as sent: its JSON, gzipped (RFC 8460 §5.1, media type application/tlsrpt+gzip, §6.4). */
export function gzipReport(report: TlsReportJson): Buffer {
  return zlib.gzipSync(Buffer.from(JSON.stringify(report), 'utf8'));
}

/**
 * RFC 8460 §5.1's file name: sender "!" policy-domain "!" begin-timestamp
 * "!" end-timestamp "!" unique-id ".json.gz", where sender is the domain of
 * the report's contact address and the timestamps are the date-range's
 * bounds in seconds since the epoch. unique-id must be letters and digits.
 */
export function reportFilename(submitter: string, policyDomain: string, day: string, uniqueId: string): string {
  const { start, end } = dayBounds(day);
  if (!/^[A-Za-z0-9]+$/.test(uniqueId)) throw new Error(`unique-id must be letters and digits: ${uniqueId}`);
  return `${submitter}!${policyDomain}!${start / 1000}!${end / 1000}!${uniqueId}.json.gz`;
}
