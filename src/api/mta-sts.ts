// Our own MTA-STS policy (RFC 8461), served on the http listener. A sender
// that finds `_mta-sts.<domain>` TXT fetches
// https://mta-sts.<domain>/.well-known/mta-sts.txt (§3.3) and, in enforce
// mode, delivers only over validated TLS to the MX names the policy lists.
// The policy text comes from the `mtaSts` config section; `tern dns DOMAIN`
// prints the TXT record whose id is derived from the same text (policyId), so
// a changed policy always comes with a changed id (§3.1: senders refetch only
// when the id changes).

import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { TernConfig } from '../config/types.ts';

export type MtaStsConfig = TernConfig['mtaSts'];

import { MTA_STS_HOST_LABEL, MTA_STS_PATH } from '../smtp/mta-sts.ts';

// The names and the mx pattern syntax, shared with the sending side.
export { MTA_STS_HOST_LABEL, MTA_STS_PATH, mxMatches } from '../smtp/mta-sts.ts';

/**
 * The policy body, RFC 8461 §3.2: `key: value` lines ending in CRLF, one
 * `mx:` line per MX pattern, max_age in whole seconds. The mx lines stay in
 * mode none too (which withdraws the policy): senders ignore them then, and
 * a strict parser still finds a complete policy.
 */
export function policyText(p: MtaStsConfig): string {
  const lines = ['version: STSv1', `mode: ${p.mode}`];
  for (const mx of p.mx) lines.push(`mx: ${mx}`);
  lines.push(`max_age: ${Math.floor(p.maxAge / 1000)}`);
  return lines.map((l) => `${l}\r\n`).join('');
}

/**
 * The `id=` of the `_mta-sts` TXT record for this policy text: RFC 8461
 * §3.1 wants 1-32 alphanumerics that change whenever the policy does, so a
 * hash of the text (128 bits of SHA-256, hex) is one that never needs
 * remembering to bump.
 */
export function policyId(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 32);
}

/** The name in a Host header, without port or trailing dot, lower case. */
export function hostOf(header: string | undefined): string {
  if (!header) return '';
  const h = header.trim().toLowerCase();
  // An IPv6 literal ([::1]:8025) is never an mta-sts name: no port stripping needed beyond it.
  const name = h.startsWith('[') ? h : h.replace(/:\d*$/, '');
  return name.replace(/\.$/, '');
}

/**
 * The policy text for a Host: `mta-sts.<a local domain>` gets it, anything
 * else undefined (a 404). Every local domain publishes the same policy,
 * as every one has the same MX hosts.
 */
export function policyForHost(host: string, domains: readonly string[], policy: MtaStsConfig): string | undefined {
  const prefix = `${MTA_STS_HOST_LABEL}.`;
  if (!host.startsWith(prefix)) return undefined;
  const domain = host.slice(prefix.length);
  return domains.includes(domain) ? policyText(policy) : undefined;
}

/**
 * GET /.well-known/mta-sts.txt: the policy for the request's Host, as
 * text/plain (§3.3); another Host gets the listener's usual 404. No key is
 * needed: the policy is public by design. Redirects are never used (§3.3:
 * senders must not follow them).
 */
export function mountMtaSts(app: FastifyInstance, getPolicy: (host: string) => string | undefined): void {
  app.get(MTA_STS_PATH, async (req, reply) => {
    const text = getPolicy(hostOf(req.headers.host));
    if (text === undefined) return reply.callNotFound();
    // Senders cache the policy for max_age by the id in DNS, not by HTTP caching; a short HTTP lifetime keeps a changed policy from being served stale by a proxy.
    return reply.code(200).type('text/plain; charset=utf-8').header('cache-control', 'max-age=300').send(text);
  });
}
