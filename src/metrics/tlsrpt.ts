// The TLS-RPT (RFC 8460) counters: every outbound TLS negotiation that
// remote delivery reports to src/tlsrpt/results.ts, by the policy that
// applied and how it ended, and every attempt to hand a daily report to one
// of a domain's rua addresses. Declared here, beside the other metric
// definitions, and bumped only by src/tlsrpt/.

import { CounterFamily, type Count } from './counter.ts';
import type { TlsFailure, TlsPolicyType } from '../tlsrpt/types.ts';

/** RFC 8460 §4.4 policy types: the `policy` label's values. */
export const TLS_POLICY_TYPES = ['sts', 'tlsa', 'no-policy-found'] as const satisfies readonly TlsPolicyType[];

/** RFC 8460 §4.3 result types, and success: the `result` label's values. */
export const TLS_RESULTS = [
  'success',
  'starttls-not-supported',
  'certificate-host-mismatch',
  'certificate-expired',
  'certificate-not-trusted',
  'validation-failure',
  'tlsa-invalid',
  'dnssec-invalid',
  'dane-required',
  'sts-policy-fetch-error',
  'sts-policy-invalid',
  'sts-webpki-invalid',
] as const satisfies readonly ('success' | TlsFailure)[];

const results = new CounterFamily({
  name: 'tern_tls_rpt_results_total',
  help: 'Outbound TLS negotiations (and policy failures) recorded for TLS-RPT (RFC 8460), by policy type (sts, tlsa, no-policy-found) and result (success or the RFC 8460 result type).',
  labelNames: ['policy', 'result'],
});

const reports = new CounterFamily({
  name: 'tern_tls_rpt_reports_total',
  help: 'Daily TLS-RPT reports handed to one rua address (mailto: to the queue, https: POSTed), by result: sent, or failed (tried again later the same day, a bounded number of times).',
  labelNames: ['result'],
});

// Every child made up front (3 × 12 + 2 series): a series must exist before its first increment for rate() to see it.
const BY_POLICY = Object.fromEntries(
  TLS_POLICY_TYPES.map((policy) => [policy, Object.fromEntries(TLS_RESULTS.map((result) => [result, results.child({ policy, result })]))]),
) as Record<TlsPolicyType, Record<'success' | TlsFailure, Count>>;

const REPORTS: Record<'sent' | 'failed', Count> = { sent: reports.child({ result: 'sent' }), failed: reports.child({ result: 'failed' }) };

/** One recorded attempt. Values outside the known sets are not counted (the label sets stay bounded). */
export function countTlsResult(policy: TlsPolicyType, result: 'success' | TlsFailure): void {
  BY_POLICY[policy]?.[result]?.inc();
}

/** One report handed to one rua, or one failed try. */
export function countTlsReport(result: 'sent' | 'failed'): void {
  REPORTS[result].inc();
}
