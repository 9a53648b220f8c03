// DNS blocklists (RFC 5782). A client at 192.0.2.99 is listed on a zone
// when 99.2.0.192.<zone> has an A record in 127.0.0.0/8; IPv6 clients are
// looked up by the 32 nibbles of their address, reversed (§2.4). Listed
// clients are refused at connect, before they can send anything.
//
// A DNS failure is not a listing: the list being down must not stop mail
// (we fail open and log). Answers, listed or not, are cached for a while so
// a busy client costs one lookup per zone per cacheTtl.

import net from 'node:net';
import type { Check, SessionInfo } from './policy.ts';
import { normalizeIp } from './policy.ts';
import { SmtpError } from '../smtp/reply.ts';
import type { Resolver } from '../dns/resolver.ts';
import { DnsError } from '../dns/resolver.ts';
import type { Logger } from '../util/log.ts';
import { expandIpv6 } from './ip.ts';

/** Cached (ip, zone) answers at most; the oldest go first. */
export const MAX_DNSBL_CACHE = 10_000;

export interface DnsblOptions {
  zones: string[];
  /** How long an answer (listed or not) is kept, ms. */
  cacheTtl: number;
  resolver: Pick<Resolver, 'a'>;
  log: Logger;
  isTrusted: (ip: string) => boolean;
  now?: () => number;
  maxCache?: number;
}

/** The name to look up for `ip` on `zone`, or undefined when `ip` is not an IP address. */
export function dnsblQueryName(ip: string, zone: string): string | undefined {
  const addr = normalizeIp(ip);
  if (net.isIPv4(addr)) return `${addr.split('.').reverse().join('.')}.${zone}`;
  if (!net.isIPv6(addr)) return undefined;
  const hex = expandIpv6(addr).map((g) => g.toString(16).padStart(4, '0')).join('');
  return `${[...hex].reverse().join('.')}.${zone}`;
}

/**
 * RFC 5782 §2.1: a listing is an A record in 127.0.0.0/8. Some lists answer
 * 127.255.255.x to say "you may not query us" (e.g. through a public
 * resolver); that is an error, not a listing. Anything outside 127/8 is a
 * resolver that rewrites NXDOMAIN, also not a listing.
 */
export function isListingAnswer(a: string): boolean {
  return a.startsWith('127.') && !a.startsWith('127.255.255.');
}

export class DnsblCheck implements Check {
  readonly name = 'dnsbl';
  readonly #o: DnsblOptions;
  readonly #now: () => number;
  readonly #max: number;
  /** "ip zone" → listed or not, until `expires`. */
  readonly #cache = new Map<string, { listed: boolean; expires: number }>();

  constructor(opts: DnsblOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    this.#max = opts.maxCache ?? MAX_DNSBL_CACHE;
  }

  async connect(s: SessionInfo): Promise<void> {
    if (s.role !== 'smtp' || this.#o.isTrusted(s.remoteAddress)) return;
    const ip = normalizeIp(s.remoteAddress);
    // All zones at once; the first listing zone in configured order names the refusal.
    const listed = await Promise.all(this.#o.zones.map((zone) => this.listed(ip, zone)));
    const zone = this.#o.zones.find((_, i) => listed[i]);
    if (zone !== undefined) {
      this.#o.log.info('dnsbl listed', { conn: s.id, ip, zone });
      throw new SmtpError(554, '5.7.1', `Service unavailable; client [${ip}] blocked using ${zone}`);
    }
  }

  /** Is `ip` on `zone`? false on DNS errors (logged, not cached). */
  async listed(ip: string, zone: string): Promise<boolean> {
    const name = dnsblQueryName(ip, zone);
    if (name === undefined) return false;
    const key = `${ip} ${zone}`;
    const now = this.#now();
    const hit = this.#cache.get(key);
    if (hit && hit.expires > now) return hit.listed;
    if (hit) this.#cache.delete(key);
    let listed: boolean;
    try {
      const answers = await this.#o.resolver.a(name);
      listed = answers.some(isListingAnswer);
      const odd = answers.filter((a) => !isListingAnswer(a));
      if (odd.length > 0) this.#o.log.warn('dnsbl unexpected answer', { zone, name, answers: odd });
    } catch (e) {
      // NXDOMAIN is the normal "not listed".
      if (e instanceof DnsError && e.code === 'NXDOMAIN') listed = false;
      else {
        this.#o.log.warn('dnsbl lookup failed; not treated as listed', { zone, ip, error: e });
        return false;
      }
    }
    if (this.#o.cacheTtl > 0) {
      if (this.#cache.size >= this.#max) this.#cache.delete(this.#cache.keys().next().value!);
      this.#cache.set(key, { listed, expires: now + this.#o.cacheTtl });
    }
    return listed;
  }
}
