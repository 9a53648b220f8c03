// Greylisting (RFC 6647): the first attempt from an unknown (client network,
// sender, recipient) triplet gets a temporary failure. A real MTA queues the
// message and retries; most bulk senders do not. A retry after `delay` and
// within `expire` of the first attempt passes, and from then on the triplet
// is known and passes at once for `keep` (renewed while it keeps sending).
//
// RFC 6647 §4.2 / §5: clients are grouped by network, an IPv4 /24 or an IPv6
// /64, because large senders retry from another host of the same pool. State
// lives in the embedded store, so it survives restarts and (with a shared
// database) is common to several nodes.

import type { Check, SessionInfo } from './policy.ts';
import type { Directory } from './directory.ts';
import type { Address } from '../smtp/address.ts';
import { formatAddress } from '../smtp/address.ts';
import { SmtpError } from '../smtp/reply.ts';
import type { GreylistStore } from '../store/store.ts';
import type { Logger } from '../util/log.ts';
import { clientNetwork } from './ip.ts';

/** How often expired triplets are swept from the store (on use, not on a timer). */
export const SWEEP_INTERVAL_MS = 3_600_000;

export interface GreylistOptions {
  store: GreylistStore;
  /** A retry must wait this long after the first attempt. */
  delay: number;
  /** …and come within this long of it, or it starts over. */
  expire: number;
  /** How long a triplet that passed stays known without being seen. */
  keep: number;
  isTrusted: (ip: string) => boolean;
  /**
   * When given, only recipients it knows are greylisted: an unknown one gets
   * its 550 at once instead of a 450 first and a 550 on the retry.
   */
  directory?: Directory | undefined;
  log: Logger;
  now?: () => number;
}

export class GreylistCheck implements Check {
  readonly name = 'greylist';
  readonly #o: GreylistOptions;
  readonly #now: () => number;
  #lastSweep = 0;

  constructor(opts: GreylistOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
  }

  rcpt(s: SessionInfo, to: Address, _params: unknown, from?: Address | null): void {
    // Port 25 only; authenticated users and trusted networks are ours.
    if (s.role !== 'smtp' || s.user !== undefined || this.#o.isTrusted(s.remoteAddress)) return;
    if (this.#o.directory && !this.#deliverable(to)) return;
    const sender = from ? formatAddress(from).toLowerCase() : '';
    const triplet = `${clientNetwork(s.remoteAddress)} <${sender}> <${formatAddress(to).toLowerCase()}>`;
    const now = this.#now();
    let pass: boolean;
    try {
      this.#sweep(now);
      pass = this.#decide(triplet, now);
    } catch (e) {
      // The store failing is our problem, not the sender's: let the mail in.
      this.#o.log.error('greylist store failed; not greylisting', { conn: s.id, error: e });
      return;
    }
    if (!pass) {
      this.#o.log.info('greylisted', { conn: s.id, ip: s.remoteAddress, triplet });
      throw new SmtpError(450, '4.7.1', 'Greylisted, please try again later');
    }
  }

  /** true: let it through (and remember); false: 450. */
  #decide(triplet: string, now: number): boolean {
    const { store, delay, expire, keep } = this.#o;
    const e = store.getGreylist(triplet);
    if (e && e.passedAt !== null && e.expires > now) {
      // Known. Renew its lifetime, but not with a write for every RCPT.
      if (e.expires - now < keep * 0.9) store.putGreylist(triplet, { ...e, expires: now + keep });
      return true;
    }
    if (e && e.passedAt === null && now - e.firstSeen <= expire) {
      if (now - e.firstSeen < delay) return false; // retried too early
      store.putGreylist(triplet, { firstSeen: e.firstSeen, passedAt: now, expires: now + keep });
      return true;
    }
    // New, or its round (or its known life) ran out: start over.
    store.putGreylist(triplet, { firstSeen: now, passedAt: null, expires: now + expire });
    return false;
  }

  #sweep(now: number): void {
    if (now - this.#lastSweep < SWEEP_INTERVAL_MS) return;
    this.#lastSweep = now;
    const n = this.#o.store.expireGreylist(now);
    if (n > 0) this.#o.log.debug('greylist swept', { expired: n });
  }

  #deliverable(to: Address): boolean {
    const d = this.#o.directory!;
    if (to.literal || !d.isLocalDomain(to.domain)) return false; // relaying: the recipient check decides
    try {
      const t = d.resolve(to.local, to.domain);
      return t !== null && t.length > 0;
    } catch {
      return false;
    }
  }
}
