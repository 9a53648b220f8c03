// The client's reverse DNS, checked forward again ("forward-confirmed
// reverse DNS", FCrDNS): the `iprev` method of RFC 8601 §3. The PTR names
// of the address are looked up; the check passes when one of them has the
// address among its A/AAAA records.

import net from 'node:net';
import type { DnsResolve } from '../dns/mailauth-resolver.ts';

/** RFC 8601 §2.7.3 results. */
export type IprevResult = 'pass' | 'fail' | 'temperror' | 'permerror';

export interface Iprev {
  result: IprevResult;
  ip: string;
  /** The confirmed name on pass; otherwise the PTR names found (possibly none). */
  names: string[];
}

/**
 * PTR names checked forward at most. A PTR set is the client's own data; the
 * cap keeps one connection from costing many lookups (the same reason as
 * RFC 7208 §4.6.4's limit of 10 for SPF's ptr mechanism).
 */
export const MAX_PTR_NAMES = 10;

/** Answers that mean "no such data" rather than "could not find out". */
const NO_DATA = new Set(['ENOTFOUND', 'ENODATA', 'EBADNAME']);
const codeOf = (e: unknown): string => (e as { code?: string } | null)?.code ?? '';

/** The PTR owner name of an address: `4.3.2.1.in-addr.arpa`, or nibbles under `ip6.arpa` (RFC 3596 §2.5). */
export function reverseName(ip: string): string {
  if (net.isIPv4(ip)) return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
  const [head = '', tail = ''] = ip.split('::');
  const groups = (s: string): string[] => (s ? s.split(':') : []);
  const h = groups(head);
  const t = groups(tail);
  const hex = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t].map((g) => g.padStart(4, '0')).join('');
  return `${[...hex.toLowerCase()].reverse().join('.')}.ip6.arpa`;
}

/** Both addresses in one canonical text form ("::ffff:1.2.3.4" and "1.2.3.4" stay different families on purpose). */
function sameAddress(a: string, b: string): boolean {
  if (net.isIPv4(a) || net.isIPv4(b)) return a === b;
  const list = new net.BlockList();
  list.addAddress(a, 'ipv6');
  return list.check(b, 'ipv6');
}

/**
 * RFC 8601 §2.7.3: permerror when no PTR data exists for the address, fail
 * when no PTR name leads back to it (mismatch, or the forward lookups say
 * NXDOMAIN/NODATA), temperror when a DNS failure leaves the answer unknown.
 */
export async function checkIprev(ip: string, resolve: DnsResolve): Promise<Iprev> {
  const family = net.isIP(ip);
  if (family === 0) return { result: 'permerror', ip, names: [] };
  let names: string[];
  try {
    names = (await resolve(reverseName(ip), 'PTR')).filter((n): n is string => typeof n === 'string');
  } catch (e) {
    return { result: NO_DATA.has(codeOf(e)) ? 'permerror' : 'temperror', ip, names: [] };
  }
  if (names.length === 0) return { result: 'permerror', ip, names: [] };
  names = [...new Set(names.map((n) => n.toLowerCase().replace(/\.$/, '')))].slice(0, MAX_PTR_NAMES);
  let temporary = false;
  const confirmed = await Promise.all(names.map(async (name) => {
    try {
      const addrs = await resolve(name, family === 4 ? 'A' : 'AAAA');
      return addrs.some((a) => typeof a === 'string' && sameAddress(a, ip));
    } catch (e) {
      if (!NO_DATA.has(codeOf(e))) temporary = true;
      return false;
    }
  }));
  const hit = names.find((_, i) => confirmed[i]);
  if (hit !== undefined) return { result: 'pass', ip, names: [hit] };
  return { result: temporary ? 'temperror' : 'fail', ip, names };
}
