// tern_inbound_results_total: the inbound checks' results (authenticate.ts),
// counted by intake once per checked message, whatever the data stage then
// decides: these are facts about the mail that arrives, the material of
// SPF/DKIM/DMARC pass rates, not verdicts.

import { CounterFamily, type Count } from '../metrics/counter.ts';
import type { AuthOutcome } from './authenticate.ts';

/**
 * The result keywords of each check: RFC 8601 §2.7.1 (DKIM) and §2.7.2
 * (SPF), RFC 7489 §11.2 (DMARC, plus neutral: mailauth's status before it
 * decides), RFC 8617 §4.4 (ARC, plus the temperror we write when the
 * checks time out). Anything else is counted as 'other', so the
 * label stays bounded whatever a new mailauth reports.
 */
export const RESULTS = {
  spf: ['pass', 'fail', 'softfail', 'neutral', 'none', 'temperror', 'permerror', 'policy'],
  dkim: ['pass', 'fail', 'neutral', 'none', 'temperror', 'permerror', 'policy'],
  dmarc: ['pass', 'fail', 'none', 'neutral', 'temperror', 'permerror'],
  arc: ['pass', 'fail', 'none', 'temperror'],
} as const;

export type CountedCheck = keyof typeof RESULTS;

/** The checks counted (iprev is in the header, not here). */
export const COUNTED_CHECKS = Object.keys(RESULTS) as CountedCheck[];

const results = new CounterFamily({
  name: 'tern_inbound_results_total',
  help: 'Inbound sender authentication results, one per checked message and check (spf, dkim, dmarc, arc); result as in Authentication-Results (RFC 8601), else other.',
  labelNames: ['check', 'result'],
});

const RESULT_COUNTS = Object.fromEntries(
  COUNTED_CHECKS.map((check) => [check, new Map([...RESULTS[check], 'other'].map((result) => [result, results.child({ check, result })]))]),
) as Record<CountedCheck, Map<string, Count>>;

/**
 * One result per check for a message, as a pass rate wants it: SPF of the
 * MAIL FROM identity; DKIM pass when any signature passed (RFC 6376 §6.1:
 * one valid signature is enough), else the first signature's result, none
 * without a signature; DMARC none when it was not evaluated; all temperror
 * when the checks did not finish.
 */
export function resultPerCheck(outcome: AuthOutcome): Record<CountedCheck, string> {
  if (outcome.incomplete !== undefined) return { spf: 'temperror', dkim: 'temperror', dmarc: 'temperror', arc: 'temperror' };
  const dkim = outcome.dkim.some((d) => d.result === 'pass') ? 'pass' : (outcome.dkim[0]?.result ?? 'none');
  return { spf: outcome.spf.result, dkim, dmarc: outcome.dmarc?.result ?? 'none', arc: outcome.arc };
}

/** Counts a checked message's results (tern_inbound_results_total). */
export function countInboundResults(outcome: AuthOutcome): void {
  const got = resultPerCheck(outcome);
  for (const check of COUNTED_CHECKS) {
    const byResult = RESULT_COUNTS[check];
    (byResult.get(got[check]) ?? byResult.get('other')!).inc();
  }
}
