// tern_tls_sessions_total: TLS sessions established, by direction and
// protocol version. Two places bump it, so it is declared here between
// them: the SMTP session (inbound: STARTTLS, RFC 3207, or implicit TLS on
// port 465, RFC 8314 §3.3) and remote delivery (outbound, each new
// connection that negotiated TLS; a reused connection is the same session).
// Only handshakes that succeeded count: a failed one is no session, and
// the log says why it failed.

import { CounterFamily, type Count } from './counter.ts';

export type TlsDirection = 'inbound' | 'outbound';

/**
 * The versions Node's TLSSocket#getProtocol() names (OpenSSL's). SSLv3 and
 * older are not negotiable in Node 24; anything else (a future version,
 * 'unknown', null) is counted as 'other', so the label stays bounded.
 */
export const TLS_VERSIONS = ['TLSv1.3', 'TLSv1.2', 'TLSv1.1', 'TLSv1'] as const;

const sessions = new CounterFamily({
  name: 'tern_tls_sessions_total',
  help: 'TLS sessions established: inbound (STARTTLS or implicit TLS on an SMTP listener) and outbound (remote delivery), by protocol version.',
  labelNames: ['direction', 'version'],
});

function children(direction: TlsDirection): Map<string, Count> {
  return new Map([...TLS_VERSIONS, 'other'].map((version) => [version, sessions.child({ direction, version })]));
}

const BY_DIRECTION: Record<TlsDirection, Map<string, Count>> = { inbound: children('inbound'), outbound: children('outbound') };

/** One successful handshake; `version` as TLSSocket#getProtocol() gives it. */
export function countTlsSession(direction: TlsDirection, version: string | null | undefined): void {
  const byVersion = BY_DIRECTION[direction];
  (byVersion.get(version ?? '') ?? byVersion.get('other')!).inc();
}
