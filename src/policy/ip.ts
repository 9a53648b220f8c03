// Small IP address helpers for the edge checks (DNSBL names, greylist and
// rate-limit keys). Inputs are what sockets and PROXY headers give us.

import net from 'node:net';
import { normalizeIp } from './policy.ts';

/** The eight 16-bit groups of an IPv6 address ("::", a trailing dotted quad and a zone id handled). */
export function expandIpv6(ip: string): number[] {
  let text = ip.split('%')[0]!;
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (quad) {
    const [a, b, c, d] = quad.slice(1).map(Number) as [number, number, number, number];
    text = text.slice(0, quad.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return groups.map((g) => parseInt(g, 16));
}

/**
 * The network a client address belongs to for greylisting: the /24 of an
 * IPv4 address (big senders retry from a neighbouring host of the same
 * pool), the /64 of an IPv6 one (one site's subnet).
 */
export function clientNetwork(ip: string): string {
  const addr = normalizeIp(ip);
  if (net.isIPv4(addr)) return `${addr.split('.').slice(0, 3).join('.')}.0/24`;
  if (net.isIPv6(addr)) return `${expandIpv6(addr).slice(0, 4).map((g) => g.toString(16)).join(':')}::/64`;
  return addr;
}
