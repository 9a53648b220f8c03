// MTA-STS (RFC 8461) names and syntax shared by both sides: serving our own
// policy (src/api/mta-sts.ts, `tern dns`) and honouring other domains'
// policies when we send (src/delivery/mta-sts-policy.ts). Pure: no I/O.

/** RFC 8461 §3.3: the one path a sender fetches. */
export const MTA_STS_PATH = '/.well-known/mta-sts.txt';
/** RFC 8461 §3: the policy host is this label in front of the policy domain. */
export const MTA_STS_HOST_LABEL = 'mta-sts';

/** RFC 8461 §4.1: an mx pattern names a host exactly, or `*.` matches exactly one leftmost label. */
export function mxMatches(pattern: string, host: string): boolean {
  const p = pattern.toLowerCase();
  const h = host.toLowerCase().replace(/\.$/, '');
  if (!p.startsWith('*.')) return p === h;
  const dot = h.indexOf('.');
  return dot > 0 && h.slice(dot + 1) === p.slice(2);
}
