// The TLS-RPT (RFC 8460) result sink remote delivery reports to: one call
// per outbound TLS negotiation (or policy failure) per MX host. record() is
// on the delivery path, so it only adds to an in-memory count keyed by what
// the daily report groups by (RFC 8460 §4.4: the UTC day, the policy, the
// result and, for failures, where it happened); a timer writes the counts
// to the store in one transaction every few seconds, and close() writes the
// rest.
//
// Every domain's results are kept, whether or not it publishes
// `_smtp._tls`: we cannot know that without a DNS lookup, which has no
// place on the delivery path, and a domain's day is a handful of rows
// (successes collapse to one row per policy). The reporter looks the record
// up once a day, and the rows expire after a week whatever happened.

import type { Logger } from '../util/log.ts';
import type { TlsReportStore, TlsResultRow } from '../store/tls-reports.ts';
import { countTlsResult, TLS_POLICY_TYPES, TLS_RESULTS } from '../metrics/tlsrpt.ts';
import type { TlsAttempt, TlsResultSink } from './types.ts';

export interface TlsResultsOptions {
  store: TlsReportStore;
  log: Logger;
  /** Epoch ms; tests pass a fake clock. */
  now?: () => number;
  /** How often the counts go to the store. */
  flushMs?: number;
  /** Distinct rows held between two flushes before an early flush (and, while the store fails, before new rows are dropped). */
  maxPending?: number;
}

export const DEFAULT_FLUSH_MS = 30_000;
/** Far more distinct (day, domain, policy, result, host) rows than 30 s of delivery makes; bounds memory if the store stays broken. */
export const DEFAULT_MAX_PENDING = 20_000;
/** A failure-reason-code is for humans (RFC 8460 §4.4); a long TLS alert text says no more past this. */
export const MAX_REASON = 200;
/** Longest DNS name (RFC 1035 §2.3.4) and more than any IPv6 literal: bounds what one row key can hold. */
const MAX_NAME = 255;
/** Policy strings kept per policy: an MTA-STS policy is a few lines (RFC 8461 §3.2), a TLSA RRset a few records. */
const MAX_POLICY_STRINGS = 64;
const MAX_POLICY_STRING = 1024;

const DAY_MS = 86_400_000;
/** What the report may name (RFC 8460 §4.3, §4.4); anything else is a caller's bug, not a result. */
const TYPES: ReadonlySet<string> = new Set(TLS_POLICY_TYPES);
const RESULTS: ReadonlySet<string> = new Set(TLS_RESULTS);

export class TlsResults implements TlsResultSink {
  readonly #store: TlsReportStore;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #maxPending: number;
  readonly #pending = new Map<string, TlsResultRow>();
  readonly #timer: NodeJS.Timeout;
  #soon: NodeJS.Timeout | undefined;
  /** The UTC day the clock is in, and its bounds, so record() formats a date once a day, not per call. */
  #day = '';
  #dayStart = 0;
  #dayEnd = 0;
  /** Attempts not counted since the last flush (the store failing for long); logged at the next flush. */
  #dropped = 0;
  #faults = 0;
  #closed = false;

  constructor(o: TlsResultsOptions) {
    this.#store = o.store;
    this.#log = o.log;
    this.#now = o.now ?? Date.now;
    this.#maxPending = Math.max(1, o.maxPending ?? DEFAULT_MAX_PENDING);
    this.#timer = setInterval(() => this.flush(), Math.max(10, o.flushMs ?? DEFAULT_FLUSH_MS));
    this.#timer.unref();
  }

  /** TlsResultSink: O(1) in the number of results so far, no I/O, never throws. */
  record(a: TlsAttempt): void {
    try {
      const type = a.policy.type;
      const result = a.result;
      if (!TYPES.has(type) || !RESULTS.has(result)) throw new Error(`unknown policy type or result: ${type} ${result}`);
      countTlsResult(type, result);
      const now = this.#now();
      if (now >= this.#dayEnd || now < this.#dayStart) this.#setDay(now);
      const domain = clip(a.policyDomain, MAX_NAME).toLowerCase();
      // Successes are summed per policy (§4.4 "summary"); where they happened is not reported.
      const success = result === 'success';
      const mxHost = success ? '' : clip(a.mxHost, MAX_NAME).toLowerCase().replace(/\.$/, '');
      const receivingIp = success ? '' : clip(a.receivingIp, MAX_NAME);
      const sendingIp = success ? '' : clip(a.sendingIp ?? '', MAX_NAME);
      const strings = a.policy.strings;
      const mxHosts = a.policy.mxHosts;
      const key = `${this.#day}\0${domain}\0${type}\0${strings.join('\x01')}\0${mxHosts.join('\x01')}\0${result}\0${mxHost}\0${receivingIp}\0${sendingIp}`;
      let row = this.#pending.get(key);
      if (row === undefined) {
        if (this.#pending.size >= this.#maxPending) {
          // Only while the store refuses writes: the early flush below has emptied the map otherwise.
          this.#dropped++;
          this.#flushSoon();
          return;
        }
        row = {
          day: this.#day,
          policyDomain: domain,
          policyType: type,
          policyStrings: boundedStrings(strings),
          mxHosts: boundedStrings(mxHosts),
          result,
          mxHost,
          receivingIp,
          sendingIp,
          count: 0,
          reason: '',
        };
        this.#pending.set(key, row);
        if (this.#pending.size >= this.#maxPending) this.#flushSoon();
      }
      row.count++;
      if (!success && a.reason) row.reason = cleanReason(a.reason);
    } catch (e) {
      // A malformed attempt must not fail a delivery; say so once in a while.
      if (this.#faults++ % 1000 === 0) this.#log.warn('tls-rpt: result not recorded', { error: String(e) });
    }
  }

  /** Writes the counts held in memory to the store, in one transaction. Synchronous; never throws. */
  flush(): void {
    if (this.#soon !== undefined) {
      clearTimeout(this.#soon);
      this.#soon = undefined;
    }
    if (this.#dropped > 0) {
      this.#log.warn('tls-rpt: results dropped while the store was failing', { dropped: this.#dropped });
      this.#dropped = 0;
    }
    if (this.#pending.size === 0) return;
    try {
      this.#store.addResults([...this.#pending.values()]);
      this.#pending.clear();
    } catch (e) {
      // Kept for the next flush (bounded by maxPending): the transaction wrote nothing.
      this.#log.warn('tls-rpt: could not store results; will retry', { rows: this.#pending.size, error: String(e) });
    }
  }

  /** Rows held in memory (for tests and the log). */
  get pending(): number {
    return this.#pending.size;
  }

  /** Stops the timer and writes what is held. Call it after delivery has stopped: later results stay in memory. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.flush();
  }

  #setDay(now: number): void {
    this.#dayStart = Math.floor(now / DAY_MS) * DAY_MS;
    this.#dayEnd = this.#dayStart + DAY_MS;
    this.#day = utcDay(now);
  }

  #flushSoon(): void {
    if (this.#soon !== undefined || this.#closed) return;
    this.#soon = setTimeout(() => this.flush(), 0);
    this.#soon.unref();
  }
}

/** The UTC day of an epoch-ms time, `YYYY-MM-DD` (RFC 3339 full-date). */
export function utcDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

function clip(s: string, max: number): string {
  return s.length > max ? s.slice(0, max) : s;
}

function boundedStrings(list: readonly string[]): string[] {
  return list.slice(0, MAX_POLICY_STRINGS).map((s) => clip(s, MAX_POLICY_STRING));
}

/** A reply or an error message as one bounded line of text: control characters (CR, LF, NUL) become spaces. */
function cleanReason(s: string): string {
  return clip(s.replace(/[\x00-\x1f\x7f]+/g, ' ').trim(), MAX_REASON);
}
