// The daily TLS-RPT reports (RFC 8460 §4.1): once a UTC day is over, each
// policy domain we have results for gets that day's aggregate report, if
// it publishes `_smtp._tls` (§3), at every rua: by mail (§5.3, handed to
// intake through `submit`) or by HTTPS POST (§5.4).
//
// One timer, unref'd. It fires shortly after midnight UTC plus a random
// delay of up to an hour (§4.1 asks senders to spread the load on
// receivers), and after a run that left reports to retry, again an hour or
// so later, a bounded number of times. What became of each report, and
// which rua took it, is in the store, written as soon as a rua accepts: a
// restart (or a retry) sends only what has not been sent.

import { randomBytes } from 'node:crypto';
import type { Logger } from '../util/log.ts';
import type { Resolver } from '../dns/resolver.ts';
import { DnsError } from '../dns/resolver.ts';
import type { TlsReportState, TlsReportStore } from '../store/tls-reports.ts';
import { countTlsReport } from '../metrics/tlsrpt.ts';
import { buildReport, gzipReport, reportFilename } from './report.ts';
import { composeReportMail } from './mail.ts';
import { postReport } from './https.ts';
import { parseTlsRptRecord, type TlsRptDestination } from './record.ts';
import { utcDay } from './results.ts';

/** The timer's plan; every field has a default. */
export interface TlsReportSchedule {
  /** The random delay after 00:00 UTC is drawn from [minDelayMs, minDelayMs + spreadMs). */
  spreadMs?: number;
  minDelayMs?: number;
  /** Between runs that left reports to retry (±20 %). */
  retryMs?: number;
  /** After start-up, when today's run time has passed: a catch-up run within this (randomised) delay. */
  startDelayMs?: number;
}

export interface TlsReporterOptions {
  store: TlsReportStore;
  resolver: Resolver;
  log: Logger;
  /** RFC 8460 §4.4 "organization-name". */
  organization: string;
  /** RFC 8460 §4.4 "contact-info": an address; the From and envelope sender of the report mail. */
  contact: string;
  /** The domain named as submitter (§5.1 file name, §5.3 Subject and TLS-Report-Submitter); default: the contact's domain. */
  submitter?: string;
  /** Queues one report message (mailto: rua) through intake; rejects when it was not queued. */
  submit: (msg: { from: string; to: string[]; raw: Buffer }) => Promise<void>;
  /** Writes results still held in memory (TlsResults#flush) before a run reads the day. */
  flush?: () => void;
  now?: () => number;
  /** Extra CAs trusted for https: rua (tests). */
  httpsCa?: string | Buffer | (string | Buffer)[];
  /** POST to loopback and private addresses too (tests only; default false, see https.ts). */
  allowPrivateAddresses?: boolean;
  /** One POST, connect to last byte. */
  httpTimeoutMs?: number;
  /** false: no timer (tests, a CLI); runOnce() only. */
  schedule?: boolean | TlsReportSchedule;
  /** Runs that may try one report before it is given up. */
  maxAttempts?: number;
}

export const DEFAULT_SPREAD_MS = 60 * 60_000;
/**
 * Past the results' flush interval (30 s), so the day's last results are in
 * the store even without the `flush` hook; and past midnight's own rush.
 */
export const DEFAULT_MIN_DELAY_MS = 5 * 60_000;
export const DEFAULT_RETRY_MS = 60 * 60_000;
export const DEFAULT_START_DELAY_MS = 5 * 60_000;
export const DEFAULT_MAX_ATTEMPTS = 4;
export const DEFAULT_HTTP_TIMEOUT_MS = 30_000;
/**
 * How long a claimed report is another node's (store.claimReport): longer than
 * one attempt (a DNS lookup and every rua's delivery; each save of progress
 * renews it), so a live node is never raced; a dead node's claim lapses.
 */
export const CLAIM_LEASE_MS = 10 * 60_000;
/** How many days back a scheduled run still sends reports it missed (the server was down at the time). */
export const LATE_DAYS = 3;
/** Results and report states older than this many days are deleted. */
export const RETENTION_DAYS = 7;
/** Domains worked on at once: DNS lookups and deliveries overlap, without a burst at one receiver. */
const CONCURRENCY = 4;
const DAY_MS = 86_400_000;

type Outcome = 'sent' | 'failed' | 'none';

export class TlsReporter {
  readonly #o: TlsReporterOptions;
  readonly #now: () => number;
  readonly #submitter: string;
  readonly #schedule: Required<TlsReportSchedule> | null;
  readonly #maxAttempts: number;
  readonly #abort = new AbortController();
  #timer: NodeJS.Timeout | undefined;
  /** Runs one at a time: the timer's and runOnce() calls queue behind each other. */
  #running: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(o: TlsReporterOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    const at = o.contact.lastIndexOf('@');
    this.#submitter = (o.submitter ?? (at >= 0 ? o.contact.slice(at + 1) : o.organization)).toLowerCase();
    this.#maxAttempts = Math.max(1, o.maxAttempts ?? DEFAULT_MAX_ATTEMPTS);
    const s = o.schedule ?? true;
    this.#schedule = s === false ? null : {
      spreadMs: DEFAULT_SPREAD_MS,
      minDelayMs: DEFAULT_MIN_DELAY_MS,
      retryMs: DEFAULT_RETRY_MS,
      startDelayMs: DEFAULT_START_DELAY_MS,
      ...(s === true ? {} : definedOnly(s)),
    };
    if (this.#schedule) {
      const now = this.#now();
      const slot = this.#slot(Math.floor(now / DAY_MS) * DAY_MS);
      // Today's run is still ahead: wait for it. Otherwise catch up soon (a restart may have missed it).
      this.#arm(slot > now ? slot - now : jitter(this.#schedule.startDelayMs, 0.5, 1));
    }
  }

  /**
   * Sends the reports of one UTC day (default: yesterday) not sent yet, and
   * retries those still pending. `sent`: reports every rua has now taken;
   * `failed`: reports a rua (or the DNS lookup) failed for in this run.
   */
  runOnce(day?: string): Promise<{ sent: number; failed: number }> {
    const d = day ?? utcDay(this.#now() - DAY_MS);
    return this.#serial(() => this.#runDay(d));
  }

  /** Stops the timer, aborts POSTs in flight, and waits for the current run to stop. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#abort.abort();
    await this.#running.catch(() => undefined);
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.#running.catch(() => undefined).then(fn);
    this.#running = p;
    return p;
  }

  /** The time of the daily run for the day starting at `dayStart` (epoch ms of its 00:00 UTC). */
  #slot(dayStart: number): number {
    const s = this.#schedule!;
    return dayStart + s.minDelayMs + Math.floor(Math.random() * s.spreadMs);
  }

  #arm(delayMs: number): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#wake(), Math.max(0, Math.min(delayMs, 2 ** 31 - 1)));
    this.#timer.unref();
  }

  async #wake(): Promise<void> {
    let retry = false;
    try {
      retry = await this.#serial(() => this.#scheduledRun());
    } catch (e) {
      this.#o.log.error('tls-rpt: report run failed', { error: String(e) });
      retry = true;
    }
    const now = this.#now();
    const tomorrow = this.#slot(Math.floor(now / DAY_MS) * DAY_MS + DAY_MS);
    const next = retry ? Math.min(now + jitter(this.#schedule!.retryMs, 0.8, 1.2), tomorrow) : tomorrow;
    this.#arm(next - now);
  }

  /** Every finished day of the last LATE_DAYS with reports to send; then old rows go. Returns whether a report is left to retry. */
  async #scheduledRun(): Promise<boolean> {
    const now = this.#now();
    const today = utcDay(now);
    this.#o.flush?.();
    let retry = false;
    for (const day of this.#o.store.daysWithResults(utcDay(now - LATE_DAYS * DAY_MS), today)) {
      if (this.#closed) break;
      const r = await this.#runDay(day, false);
      if (r.failed > 0) retry = true;
    }
    try {
      const gone = this.#o.store.expire(utcDay(now - RETENTION_DAYS * DAY_MS));
      if (gone > 0) this.#o.log.debug('tls-rpt: expired old results', { rows: gone });
    } catch (e) {
      this.#o.log.warn('tls-rpt: could not expire old results', { error: String(e) });
    }
    return retry;
  }

  async #runDay(day: string, flush = true): Promise<{ sent: number; failed: number }> {
    if (flush) this.#o.flush?.();
    const domains = this.#o.store.unreported(day);
    let sent = 0;
    let failed = 0;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < domains.length && !this.#closed) {
        const domain = domains[next++]!;
        let outcome: Outcome;
        try {
          outcome = await this.#report(day, domain);
        } catch (e) {
          // A store error or a bug for one domain must not stop the others.
          this.#o.log.error('tls-rpt: report failed', { day, domain, error: String(e) });
          outcome = 'failed';
        }
        if (outcome === 'sent') sent++;
        else if (outcome === 'failed') failed++;
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, domains.length) }, worker));
    if (sent + failed > 0) this.#o.log.info('tls-rpt: reports', { day, sent, failed });
    return { sent, failed };
  }

  /** One domain's report for one day, to each rua that has not taken it yet. */
  async #report(day: string, domain: string): Promise<Outcome> {
    const store = this.#o.store;
    // A msg-id (RFC 5322 §3.6.4), as §5.3's Subject needs; made once (the first claim stores it) and kept for retries.
    const fresh = `${day}.${randomBytes(6).toString('hex')}.${domain}@${this.#submitter}`;
    const now = this.#now();
    // One node of several sends it (the claim is atomic in the store); a claim older than CLAIM_LEASE_MS is a dead node's.
    const claimed = store.claimReport(day, domain, fresh, now, now - CLAIM_LEASE_MS);
    if (claimed === null) return 'none';
    const state: TlsReportState = claimed;
    const unique = state.reportId.match(/^\d{4}-\d{2}-\d{2}\.([0-9a-f]+)\./)?.[1] ?? randomBytes(6).toString('hex');
    /** Progress renews the claim; `release` at the end of an unfinished attempt lets the next run (this node's or another's) claim it at once. */
    const save = (s: TlsReportState['state'], release = false): void => {
      state.state = s;
      state.updatedAt = release ? 0 : this.#now();
      store.putReport(state);
    };
    const giveUp = state.attempts >= this.#maxAttempts;

    let destinations: TlsRptDestination[] | null;
    try {
      destinations = parseTlsRptRecord(await this.#o.resolver.txt(`_smtp._tls.${domain}`));
    } catch (e) {
      if (e instanceof DnsError && !e.temporary) {
        destinations = null; // NXDOMAIN: no record
      } else {
        this.#o.log.warn('tls-rpt: _smtp._tls lookup failed', { day, domain, error: String(e), willRetry: !giveUp });
        save(giveUp ? 'failed' : 'pending', true);
        return 'failed';
      }
    }
    if (destinations === null) {
      save('no-rua');
      return 'none';
    }

    const rows = store.results(day, domain);
    const report = buildReport({ organization: this.#o.organization, contact: this.#o.contact, reportId: state.reportId, day }, rows);
    const gz = gzipReport(report);
    const filename = reportFilename(this.#submitter, domain, day, unique);
    let successful = 0;
    let failedSessions = 0;
    for (const p of report.policies) {
      successful += p.summary['total-successful-session-count'];
      failedSessions += p.summary['total-failure-session-count'];
    }
    let anyFailed = false;
    for (const d of destinations) {
      if (state.delivered.includes(d.uri)) continue;
      if (this.#closed) {
        anyFailed = true;
        break;
      }
      const why = await this.#deliver(d, { domain, day, reportId: state.reportId, filename, gz, successful, failed: failedSessions });
      if (why === null) {
        countTlsReport('sent');
        state.delivered.push(d.uri);
        // At once: a crash after this never sends to this rua again.
        save('pending');
        this.#o.log.info('tls-rpt: report sent', { day, domain, rua: d.uri, reportId: state.reportId });
      } else {
        countTlsReport('failed');
        anyFailed = true;
        this.#o.log.warn('tls-rpt: report not delivered', { day, domain, rua: d.uri, error: why, willRetry: !giveUp && !this.#closed });
      }
    }
    if (!anyFailed) {
      save('sent');
      return 'sent';
    }
    // Closing: the attempt does not count, so the run after the restart tries again.
    if (this.#closed) state.attempts--;
    save(giveUp && !this.#closed ? 'failed' : 'pending', true);
    return 'failed';
  }

  /** null when the rua took the report, else why not. Never throws. */
  async #deliver(
    d: TlsRptDestination,
    r: { domain: string; day: string; reportId: string; filename: string; gz: Buffer; successful: number; failed: number },
  ): Promise<string | null> {
    if (d.kind === 'https') {
      return postReport(d.url, r.gz, {
        resolver: this.#o.resolver,
        timeoutMs: this.#o.httpTimeoutMs ?? DEFAULT_HTTP_TIMEOUT_MS,
        ca: this.#o.httpsCa,
        allowPrivate: this.#o.allowPrivateAddresses,
        userAgent: `Tern TLS-RPT (${this.#submitter})`,
        signal: this.#abort.signal,
      });
    }
    try {
      const raw = await composeReportMail({
        from: this.#o.contact,
        to: d.addresses,
        policyDomain: r.domain,
        submitter: this.#submitter,
        reportId: r.reportId,
        filename: r.filename,
        report: r.gz,
        day: r.day,
        successful: r.successful,
        failed: r.failed,
        date: new Date(this.#now()),
      });
      await this.#o.submit({ from: this.#o.contact, to: d.addresses, raw });
      return null;
    } catch (e) {
      return e instanceof Error ? e.message : String(e);
    }
  }
}

/** `base` times a random factor in [lo, hi). */
function jitter(base: number, lo: number, hi: number): number {
  return Math.floor(base * (lo + Math.random() * (hi - lo)));
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
