// Which TLS a delivery to a recipient domain must have, and how to judge the
// session: DANE (RFC 7672) where the configured resolver validates DNSSEC and
// an MX host publishes usable TLSA records; else the domain's MTA-STS policy
// (RFC 8461); else opportunistic TLS (RFC 7435) as before. DANE wins where a
// domain has both (RFC 8461 §2: "senders who implement DANE SHOULD use it
// when it is present").
//
// The outcome per MX host is a HostTls: the client's TLS mode, the check of
// the session before anything is sent over it (verifyTls), whether a failed
// check stops delivery to that host (enforce) or is only reported (MTA-STS
// testing mode, or the sender's `TLS-Required: No`, RFC 8689 §4.2.2), and
// the policy as TLS-RPT reports it (RFC 8460 §4.4).
//
// REQUIRETLS (RFC 8689 §4.2.1): the message may only travel over TLS whose
// server identity a policy vouches for: DANE, or an MX host the domain's
// MTA-STS policy names, with a certificate valid for that name. Without
// either there is no acceptable path (5.7.30).

import type { TLSSocket } from 'node:tls';
import type { MxHost } from './mx.ts';
import type { TlsAttempt, TlsFailure } from '../tlsrpt/types.ts';
import type { SecureResolver, TlsaRecord } from '../dns/secure.ts';
import { peerChain, tlsaToString, usableTlsa, verifyDane } from './dane.ts';
import { mxMatches, type StsLookup } from './mta-sts-policy.ts';

/** Where a domain's MTA-STS policy comes from (MtaStsPolicies in mta-sts-policy.ts). */
export interface StsSource {
  get(domain: string): Promise<StsLookup>;
}

export type TlsVerdict = { failure: TlsFailure; reason: string } | null;

/** How to speak TLS to one MX host. */
export interface HostTls {
  /** 'required': no session without TLS (a policy applies and is enforced); else the configured mode. */
  mode: 'required' | 'configured';
  /** Judges the session; null = the client's own default (opportunistic: anything goes). */
  verify: ((socket: TLSSocket) => TlsVerdict) | null;
  /** A failed check stops delivery to this host. */
  enforce: boolean;
  /** The session's identity was checked by a policy (DANE or MTA-STS), as REQUIRETLS needs. */
  authenticated: boolean;
  /** Identifies the kind of session for connection reuse: a session made under a weaker policy must not carry mail that needs a stronger one. */
  reuseKey: string;
  /** For TLS-RPT. */
  report: TlsAttempt['policy'];
}

export type HostDecision = { host: MxHost; tls: HostTls } | { host: MxHost; fail: { failure: TlsFailure; reason: string; report: TlsAttempt['policy'] } };

/** The decision for one recipient domain: the hosts to try, in order, each with its TLS. */
export interface DomainTls {
  /** Lower-case policy domain (TLS-RPT's "policy-domain"). */
  domain: string;
  kind: 'dane' | 'sts' | 'none';
  hosts: HostDecision[];
  /** Why no host is left, when none is (e.g. MTA-STS enforce and no MX matches); a temporary failure. */
  noHosts?: { failure: TlsFailure; reason: string } | undefined;
  /** A policy lookup that failed but let delivery go on (RFC 8461 §5: as if no policy), for TLS-RPT. */
  policyFailure?: { failure: TlsFailure; reason: string } | undefined;
}

export interface TlsPolicyOptions {
  /** Set when dns.dnssec: DANE is used, with this resolver's validated answers. */
  dane?: SecureResolver | undefined;
  /** Set when outbound.mtaSts. */
  sts?: StsSource | undefined;
  now?: () => number;
}

/** What the message asks (RFC 8689). */
export interface TlsDemand {
  /** MAIL FROM … REQUIRETLS. */
  requireTls: boolean;
  /** `TLS-Required: No`: report policy failures but deliver anyway (ignored with REQUIRETLS, §4.2.2). */
  tlsOptional: boolean;
}

/** Node's verification error codes (an OpenSSL X509_V_ERR name, or ERR_TLS_CERT_ALTNAME_INVALID) as RFC 8460 §4.3 result types. */
export function pkixFailure(code: string | Error | undefined | null): TlsFailure {
  const c = typeof code === 'string' ? code : (code as (Error & { code?: string }) | null | undefined)?.code ?? '';
  if (c === 'ERR_TLS_CERT_ALTNAME_INVALID' || c === 'HOSTNAME_MISMATCH') return 'certificate-host-mismatch';
  if (c === 'CERT_HAS_EXPIRED' || c === 'CERT_NOT_YET_VALID') return 'certificate-expired';
  if (/SELF_SIGNED|UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY_LEAF|CERT_UNTRUSTED|CERT_REJECTED/.test(c)) return 'certificate-not-trusted';
  return 'validation-failure';
}

/** The MTA-STS check: the chain verifies against the trusted CAs and the certificate names the MX host (node checks the name given as servername). */
function pkixVerify(socket: TLSSocket): TlsVerdict {
  if (socket.authorized) return null;
  const err = socket.authorizationError;
  const code = typeof err === 'string' ? err : (err as (Error & { code?: string }) | undefined)?.code ?? String(err);
  return { failure: pkixFailure(code), reason: `certificate not valid for MTA-STS (${code})` };
}

const NO_POLICY: TlsAttempt['policy'] = { type: 'no-policy-found', strings: [], mxHosts: [] };
/** A TLSA policy whose records could not be had (the lookup failed): RFC 8460 §4.4 lets policy-string be absent. */
const TLSA_UNKNOWN: TlsAttempt['policy'] = { type: 'tlsa', strings: [], mxHosts: [] };

export class TlsPolicy {
  readonly #o: TlsPolicyOptions;

  constructor(opts: TlsPolicyOptions) {
    this.#o = opts;
  }

  /** Whether anything beyond opportunistic TLS is ever used (so delivery can skip the lookups). */
  get active(): boolean {
    return !!this.#o.dane || !!this.#o.sts;
  }

  /**
   * The TLS for each MX host of `domain`, in the order given (already
   * routed: preference, then random). `implicit` is true for an implicit MX
   * (the domain's own address): DANE still applies to it (RFC 7672 §2.2.1).
   */
  async decide(domain: string, hosts: MxHost[], demand: TlsDemand): Promise<DomainTls> {
    const dane = this.#o.dane ? await this.#daneHosts(hosts, demand) : null;
    if (dane) return { domain, kind: 'dane', hosts: dane };

    const sts = this.#o.sts ? await this.#o.sts.get(domain) : ({ kind: 'none' } as const);
    if (sts.kind === 'policy' && sts.policy.mode !== 'none') {
      const { policy } = sts;
      const report: TlsAttempt['policy'] = { type: 'sts', strings: sts.text.split(/\r?\n/).filter((l) => l.trim() !== ''), mxHosts: policy.mx };
      // RFC 8461 §5.1 enforce: only MX hosts the policy names; testing: all, checked and reported (§5.2).
      // REQUIRETLS (RFC 8689 §4.2.1) holds a testing policy to its word too.
      const enforce = (policy.mode === 'enforce' && !demand.tlsOptional) || demand.requireTls;
      const decided: HostDecision[] = [];
      for (const host of hosts) {
        const listed = mxMatches(policy, host.name);
        if (!listed && enforce) {
          decided.push({ host, fail: { failure: 'validation-failure', reason: `MX host ${host.name} is not named by the MTA-STS policy of ${domain}`, report } });
          continue;
        }
        decided.push({
          host,
          tls: {
            mode: enforce ? 'required' : 'configured',
            verify: pkixVerify,
            enforce,
            authenticated: listed,
            reuseKey: enforce ? `sts:${host.name}` : '',
            report,
          },
        });
      }
      const usable = decided.some((d) => 'tls' in d);
      return {
        domain,
        kind: 'sts',
        hosts: decided,
        noHosts: usable ? undefined : { failure: 'validation-failure', reason: `no MX host of ${domain} is named by its MTA-STS policy (mx: ${policy.mx.join(', ')})` },
      };
    }
    const policyFailure = sts.kind === 'error' ? { failure: sts.failure, reason: sts.reason } : undefined;
    return {
      domain,
      kind: 'none',
      hosts: hosts.map((host) => ({ host, tls: { mode: 'configured', verify: null, enforce: false, authenticated: false, reuseKey: '', report: NO_POLICY } })),
      policyFailure,
    };
  }

  /**
   * RFC 7672 §2.2: per MX host, TLSA records at _25._tcp.<host> count only
   * when the host's address records and the TLSA answer are both secure
   * (validated: the AD bit). Returns null when no host has DANE, so the
   * domain falls back to MTA-STS or opportunistic TLS.
   */
  async #daneHosts(hosts: MxHost[], demand: TlsDemand): Promise<HostDecision[] | null> {
    const lookups = this.#o.dane!;
    const decided: HostDecision[] = [];
    let any = false;
    for (const host of hosts) {
      const d = await this.#daneHost(host, lookups, demand);
      if (d === null) {
        decided.push({ host, tls: { mode: 'configured', verify: null, enforce: false, authenticated: false, reuseKey: '', report: NO_POLICY } });
        continue;
      }
      any = true;
      decided.push(d);
    }
    return any ? decided : null;
  }

  async #daneHost(host: MxHost, lookups: SecureResolver, demand: TlsDemand): Promise<HostDecision | null> {
    // An address literal or an IP has no TLSA base name.
    if (/^[\d.]+$|:/.test(host.name)) return null;
    // §2.2.2: TLSA records are looked up only for a host whose address records are secure.
    let secureAddress: boolean;
    // §3.2.2: the MX host name is a reference identifier, and so is its CNAME-expanded name when the chain is secure.
    const names = [host.name];
    try {
      const [a, aaaa] = await Promise.all([lookups.a(host.name), lookups.aaaa(host.name)]);
      secureAddress = (a.secure && a.rcode === 'NOERROR') || (aaaa.secure && aaaa.rcode === 'NOERROR');
      if (a.secure && a.canonical && a.canonical !== host.name) names.push(a.canonical);
      // A validating resolver answers SERVFAIL for bogus data (RFC 4035 §5.5): that host cannot be trusted with anything.
      if (!secureAddress && (a.rcode === 'SERVFAIL' || aaaa.rcode === 'SERVFAIL')) {
        return { host, fail: { failure: 'dnssec-invalid', reason: `DNSSEC validation of ${host.name} failed (SERVFAIL)`, report: TLSA_UNKNOWN } };
      }
    } catch (e) {
      return { host, fail: { failure: 'dnssec-invalid', reason: `DNSSEC lookup of ${host.name} failed: ${(e as Error).message}`, report: TLSA_UNKNOWN } };
    }
    if (!secureAddress) return null;
    const base = `_25._tcp.${host.name}`;
    let tlsa: { rcode: string; secure: boolean; records: readonly TlsaRecord[] };
    try {
      tlsa = await lookups.tlsa(base);
    } catch (e) {
      // §2.2: a TLSA lookup that fails (not "no records") leaves the host unusable: never fall back to clear text.
      return { host, fail: { failure: 'dnssec-invalid', reason: `TLSA lookup for ${base} failed: ${(e as Error).message}`, report: TLSA_UNKNOWN } };
    }
    if (tlsa.rcode === 'SERVFAIL') return { host, fail: { failure: 'dnssec-invalid', reason: `TLSA lookup for ${base} failed validation (SERVFAIL)`, report: TLSA_UNKNOWN } };
    if (tlsa.rcode !== 'NOERROR' && tlsa.rcode !== 'NXDOMAIN') return { host, fail: { failure: 'dnssec-invalid', reason: `TLSA lookup for ${base} failed: ${tlsa.rcode}`, report: TLSA_UNKNOWN } };
    if (!tlsa.secure || tlsa.records.length === 0) return null;
    const usable = usableTlsa([...tlsa.records]);
    const report: TlsAttempt['policy'] = { type: 'tlsa', strings: tlsa.records.map((r) => tlsaToString(r)), mxHosts: [] };
    // TLS-Required: No asks the sender to ignore the recipient's policy (RFC 8689 §4.2.2): check and report, deliver anyway.
    const enforce = !demand.tlsOptional || demand.requireTls;
    if (usable.length === 0) {
      // §2.2: secure TLSA records that are all unusable still mean the host does TLS: encrypt, without authentication.
      return { host, tls: { mode: enforce ? 'required' : 'configured', verify: null, enforce, authenticated: false, reuseKey: enforce ? `tls:${host.name}` : '', report } };
    }
    const verify = (socket: TLSSocket): TlsVerdict => {
      const v = verifyDane(usable, peerChain(socket), names, new Date(this.#o.now?.() ?? Date.now()));
      return v.ok ? null : { failure: v.failure as TlsFailure, reason: `DANE: ${v.reason}` };
    };
    return { host, tls: { mode: enforce ? 'required' : 'configured', verify, enforce, authenticated: true, reuseKey: enforce ? `dane:${host.name}` : '', report } };
  }
}
