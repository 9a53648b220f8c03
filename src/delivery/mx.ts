// Where to deliver mail for a domain: RFC 5321 §5.1 (MX lookup, implicit MX,
// preference order, randomising equal preferences) and RFC 7505 (null MX).
// The result is either an ordered list of hosts with their addresses or a
// failure that already says temporary or permanent, with the RFC 3463 code.

import net from 'node:net';
import { DnsError, type Resolver } from '../dns/resolver.ts';

export interface MxHost {
  name: string;
  preference: number;
  /** IPv4 and IPv6, IPv4 first; an address already listed for a more preferred host is left out. */
  addresses: string[];
}

export type Routing =
  /** `implicit`: no MX records, the domain itself (or an address literal) is the host (§5.1). */
  | { kind: 'hosts'; hosts: MxHost[]; implicit: boolean }
  | { kind: 'fail'; temporary: boolean; enhanced: string; reason: string };

/**
 * MX hosts tried per attempt unless the caller says otherwise (config
 * `outbound.maxMxHosts`). §5.1 lets the sender cap the list; a domain with
 * hundreds of MX records must not cost hundreds of lookups.
 */
export const DEFAULT_MAX_MX_HOSTS = 10;

/**
 * RFC 7505 §3: a null MX is a single MX record whose exchange is the root
 * ('.'; node reports it as ''). The preference is meant to be 0 but the
 * exchange alone is what makes the domain unreachable, so it is not checked.
 */
export function isNullMx(records: { exchange: string }[]): boolean {
  return records.length === 1 && isRoot(records[0]!.exchange);
}

const isRoot = (name: string) => name === '' || name === '.';
const normName = (name: string) => name.toLowerCase().replace(/\.$/, '');
const fail = (temporary: boolean, enhanced: string, reason: string): Routing => ({ kind: 'fail', temporary, enhanced, reason });

/** RFC 5321 §4.1.3: `[192.0.2.1]` or `[IPv6:2001:db8::1]`; null when not a literal, 'bad' when a malformed one. */
function addressLiteral(domain: string): string | 'bad' | null {
  if (!domain.startsWith('[')) return null;
  const m = /^\[(?:ipv6:(.+)|([^:]+))\]$/i.exec(domain);
  if (m?.[1] !== undefined) return net.isIPv6(m[1]) ? m[1] : 'bad';
  if (m?.[2] !== undefined) return net.isIPv4(m[2]) ? m[2] : 'bad';
  return 'bad'; // A General-address-literal (a tag other than IPv6) names nothing we can route to.
}

type Lookup = { addresses: string[]; temporary: DnsError | null };

/** A and AAAA of one host; a temporary failure of one family still lets the other through. */
async function addressesOf(name: string, resolver: Resolver): Promise<Lookup> {
  const [v4, v6] = await Promise.allSettled([resolver.a(name), resolver.aaaa(name)]);
  const addresses: string[] = [];
  let temporary: DnsError | null = null;
  for (const r of [v4, v6]) {
    if (r.status === 'fulfilled') addresses.push(...r.value);
    else if (!(r.reason instanceof DnsError)) temporary ??= new DnsError('UNKNOWN', true, String(r.reason));
    else if (r.reason.temporary) temporary ??= r.reason;
  }
  return { addresses, temporary };
}

/** Stable sort by preference, then a Fisher–Yates shuffle inside each run of equal preference. */
function order<T extends { priority: number }>(records: T[], random: () => number): T[] {
  const sorted = [...records].sort((x, y) => x.priority - y.priority);
  for (let start = 0; start < sorted.length; ) {
    let end = start;
    while (end < sorted.length && sorted[end]!.priority === sorted[start]!.priority) end++;
    for (let i = end - 1; i > start; i--) {
      const j = start + Math.floor(random() * (i - start + 1));
      [sorted[i], sorted[j]] = [sorted[j]!, sorted[i]!];
    }
    start = end;
  }
  return sorted;
}

/**
 * Route mail for `domain` (RFC 5321 §5.1):
 * - an address literal goes straight to that address;
 * - MX records, best preference first, equal preferences in random order,
 *   at most `maxHosts` of them, each with its A and AAAA addresses;
 * - no MX records (NODATA): the domain's own A/AAAA as an implicit MX of preference 0;
 * - null MX: 5.1.10 permanent (RFC 7505 §4.2), NXDOMAIN: 5.1.2 permanent,
 *   SERVFAIL or timeout: 4.4.3 temporary.
 *
 * Decisions the RFCs leave open:
 * - A host whose A and AAAA lookups both fail temporarily is left out and the
 *   others are used; only when every host failed that way is the whole
 *   routing a 4.4.3 temporary failure.
 * - A host with no addresses (NODATA or NXDOMAIN) is skipped. When no MX host
 *   has an address the routing fails temporarily with 4.4.4: the domain does
 *   publish MX records, so it means to receive mail and a broken host record
 *   is more likely a DNS mistake being fixed than a final answer; the queue
 *   lifetime bounds the retries (Postfix's `smtp_defer_if_no_mx_address_found = yes`).
 * - An MX exchange that is an IP address (forbidden by §5.1, "the domain name
 *   of the mail exchanger") is looked up as a name like any other, which in
 *   practice finds nothing, so the host is skipped.
 * - A root ('.') exchange beside other MX records breaks RFC 7505 §3; it is
 *   dropped and the other records are used.
 * - The same exchange listed twice is kept once, at its best preference; an
 *   address reached through an earlier host is not listed again.
 */
export async function resolveMx(
  domain: string,
  resolver: Resolver,
  opts: { maxHosts?: number; random?: () => number } = {},
): Promise<Routing> {
  const maxHosts = opts.maxHosts ?? DEFAULT_MAX_MX_HOSTS;
  const random = opts.random ?? Math.random;

  const literal = addressLiteral(domain);
  if (literal === 'bad') return fail(false, '5.1.2', `bad address literal ${domain}`);
  if (literal !== null) return { kind: 'hosts', implicit: true, hosts: [{ name: literal, preference: 0, addresses: [literal] }] };

  const name = normName(domain);
  let records: { exchange: string; priority: number }[];
  try {
    records = await resolver.mx(name);
  } catch (err) {
    return dnsFail(err, name, 'MX');
  }

  if (records.length === 0) {
    // §5.1: no MX records, so the domain is its own mail exchanger at preference 0.
    const own = await addressesOf(name, resolver);
    if (own.addresses.length > 0) return { kind: 'hosts', implicit: true, hosts: [{ name, preference: 0, addresses: own.addresses }] };
    if (own.temporary) return fail(true, '4.4.3', `DNS lookup for ${name} failed: ${own.temporary.code}`);
    return fail(false, '5.1.2', `no mail exchanger for domain ${name}`);
  }
  if (isNullMx(records)) return fail(false, '5.1.10', `domain ${name} does not accept mail (null MX)`);

  const seen = new Set<string>();
  const chosen = order(records, random)
    .map((r) => ({ exchange: normName(r.exchange), priority: r.priority }))
    .filter((r) => !isRoot(r.exchange) && !seen.has(r.exchange) && seen.add(r.exchange))
    .slice(0, maxHosts);

  const lookups = await Promise.all(chosen.map((r) => addressesOf(r.exchange, resolver)));
  const used = new Set<string>();
  const hosts: MxHost[] = [];
  let temporary: DnsError | null = null;
  for (const [i, r] of chosen.entries()) {
    const { addresses, temporary: t } = lookups[i]!;
    if (addresses.length === 0) temporary ??= t;
    const fresh = addresses.filter((a) => !used.has(a) && used.add(a));
    if (fresh.length > 0) hosts.push({ name: r.exchange, preference: r.priority, addresses: fresh });
  }
  if (hosts.length > 0) return { kind: 'hosts', implicit: false, hosts };
  if (temporary) return fail(true, '4.4.3', `DNS lookup for the mail exchangers of ${name} failed: ${temporary.code}`);
  return fail(true, '4.4.4', `no mail exchanger of ${name} has an address`);
}

function dnsFail(err: unknown, name: string, type: string): Routing {
  if (err instanceof DnsError && !err.temporary) {
    return fail(false, '5.1.2', err.code === 'NXDOMAIN' ? `no such domain: ${name}` : `bad domain ${name}: ${err.code}`);
  }
  const code = err instanceof DnsError ? err.code : String(err);
  return fail(true, '4.4.3', `DNS ${type} lookup for ${name} failed: ${code}`);
}
