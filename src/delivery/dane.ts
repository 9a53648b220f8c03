// DANE for SMTP (RFC 7672): does the certificate chain an MX host presented
// match its (DNSSEC-secure) TLSA records? Socket-free except `peerChain`, so
// every rule is tested with certificates alone (dane.test.ts).
//
// What SMTP uses of RFC 6698 (RFC 7672 §3.1): only DANE-TA(2) and DANE-EE(3).
// PKIX-TA(0) and PKIX-EE(1) are unusable, because there is no agreed set of
// public CAs for MX hosts; so are unknown usages, selectors and matching types,
// and malformed data (a digest of the wrong length, which can never match).
// Records with usage 3 are tried first: they are cheap and the common case.

import { X509Certificate, createHash, createPublicKey, type KeyObject } from 'node:crypto';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import type { TlsaRecord } from '../dns/secure.ts';

export type { TlsaRecord };

/** RFC 6698 §2.1.1 usages that RFC 7672 §3.1 keeps for SMTP. */
export const DANE_TA = 2;
export const DANE_EE = 3;
/** RFC 6698 §2.1.2. */
const SELECTOR_CERT = 0;
const SELECTOR_SPKI = 1;
/** RFC 6698 §2.1.3: 0 is the selected data itself; 1 and 2 are digests of these lengths. */
const DIGEST_LENGTH: Record<number, { algorithm: string; length: number }> = {
  1: { algorithm: 'sha256', length: 32 },
  2: { algorithm: 'sha512', length: 64 },
};

/** RFC 7672 §3.1: only DANE-TA(2) and DANE-EE(3) with selectors 0/1 and matching types 0/1/2 are usable for SMTP; PKIX-TA/PKIX-EE (0/1) and unknown values are ignored. */
export function usableTlsa(records: TlsaRecord[]): TlsaRecord[] {
  return records.filter((r) => {
    if (r.usage !== DANE_TA && r.usage !== DANE_EE) return false;
    if (r.selector !== SELECTOR_CERT && r.selector !== SELECTOR_SPKI) return false;
    if (r.matchingType === 0) return r.data.length > 0;
    // A digest of the wrong length can never match: the record is malformed, so unusable.
    return DIGEST_LENGTH[r.matchingType]?.length === r.data.length;
  });
}

export type DaneVerdict =
  | { ok: true; usage: 2 | 3 }
  | { ok: false; failure: 'tlsa-invalid' | 'validation-failure' | 'certificate-host-mismatch' | 'certificate-expired'; reason: string };

/** The octets a record's selector picks from a certificate (RFC 6698 §2.1.2). */
function selected(cert: X509Certificate, selector: number): Buffer {
  return selector === SELECTOR_CERT ? cert.raw : cert.publicKey.export({ type: 'spki', format: 'der' });
}

/** Whether the record's data matches what its selector and matching type take from `cert` (RFC 6698 §2.1.3). */
export function tlsaMatches(r: TlsaRecord, cert: X509Certificate): boolean {
  const octets = selected(cert, r.selector);
  if (r.matchingType === 0) return octets.equals(r.data);
  const digest = DIGEST_LENGTH[r.matchingType];
  return digest !== undefined && createHash(digest.algorithm).update(octets).digest().equals(r.data);
}

/**
 * The key of a "2 1 0" record (the full SubjectPublicKeyInfo of the trust
 * anchor). RFC 7671 §5.2.2 lets a server leave such a trust anchor out of its
 * chain, since the key alone checks the topmost certificate's signature.
 */
function spkiKey(r: TlsaRecord): KeyObject | null {
  if (r.usage !== DANE_TA || r.selector !== SELECTOR_SPKI || r.matchingType !== 0) return null;
  try {
    return createPublicKey({ key: r.data, format: 'der', type: 'spki' });
  } catch {
    return null;
  }
}

const signedBy = (cert: X509Certificate, issuer: X509Certificate) => cert.checkIssued(issuer) && cert.verify(issuer.publicKey);

/** Whether `cert` is outside its validity period at `now` (notBefore/notAfter, RFC 5280 §4.1.2.5). */
function outsideValidity(cert: X509Certificate, now: Date): string | null {
  const t = now.getTime();
  if (t < cert.validFromDate.getTime()) return `not valid before ${cert.validFromDate.toISOString()}`;
  if (t > cert.validToDate.getTime()) return `expired ${cert.validToDate.toISOString()}`;
  return null;
}

const subjectOf = (cert: X509Certificate) => cert.subject.replace(/\n/g, ', ');

type TaResult = { ok: true } | { ok: false; failure: 'validation-failure' | 'certificate-expired'; reason: string };

/**
 * RFC 7672 §3.1.2 / RFC 7671 §5.2: the leaf chains, through certificates the
 * server presented, to a certificate matching `r` (or, for "2 1 0", to the key
 * in `r`). Each issuer on the path must be a CA that signed the certificate
 * below it; every certificate on the path, the trust anchor's included, must be
 * within its validity dates (with DANE-TA the usual PKIX date checks apply).
 */
function chainsToTa(r: TlsaRecord, chain: X509Certificate[], now: Date): TaResult {
  const leaf = chain[0]!;
  // The trust anchor must be a CA certificate from the chain other than the leaf
  // (a TA matching the leaf itself is what DANE-EE is for, RFC 7671 §5.2.2).
  const anchors = new Set(chain.slice(1).filter((c) => c.ca && tlsaMatches(r, c)));
  const taKey = spkiKey(r);
  if (anchors.size === 0 && taKey === null) return { ok: false, failure: 'validation-failure', reason: 'no certificate in the chain matches the DANE-TA record' };

  // Walk up from the leaf; the path never gets longer than the chain (no loops).
  const path: X509Certificate[] = [leaf];
  let reached = false;
  for (let current = leaf; path.length <= chain.length; ) {
    if (anchors.has(current)) {
      reached = true;
      break;
    }
    if (taKey && current.verify(taKey)) {
      reached = true;
      break;
    }
    const issuer = chain.find((c) => c !== current && c.ca && !path.includes(c) && signedBy(current, c));
    if (!issuer) break;
    path.push(issuer);
    current = issuer;
  }
  if (!reached) return { ok: false, failure: 'validation-failure', reason: `the chain from ${subjectOf(leaf)} does not lead to the DANE-TA trust anchor` };
  for (const cert of path) {
    const problem = outsideValidity(cert, now);
    if (problem) return { ok: false, failure: 'certificate-expired', reason: `certificate ${subjectOf(cert)} ${problem}` };
  }
  return { ok: true };
}

/**
 * RFC 7672 §3.2.3: the leaf names one of the reference identifiers in a
 * subjectAltName dNSName (the subject CN only when there is none); a wildcard
 * only as the whole leftmost label, matching exactly one label.
 */
function namesHost(leaf: X509Certificate, names: string[]): string | undefined {
  for (const raw of names) {
    const name = raw.toLowerCase().replace(/\.$/, '');
    if (name === '') continue;
    const hit = leaf.checkHost(name, { subject: 'default', wildcards: true, partialWildcards: false, multiLabelWildcards: false, singleLabelSubdomains: false });
    if (hit !== undefined) return name;
  }
  return undefined;
}

/**
 * chain: as the server presented it, leaf first (see peerChain).
 * names: the reference identifiers for DANE-TA name checks (RFC 7672 §3.2.2: the MX host name, plus the TLSA base domain if CNAMEs changed it).
 *
 * - DANE-EE(3) matches the leaf only; its name and dates are not checked
 *   (RFC 7672 §3.1.1): the TLSA record, not the certificate, binds the key to the host.
 * - DANE-TA(2): see `chainsToTa`, then the leaf must carry one of `names`.
 * - Any one matching record is enough (RFC 6698 §4.1). When none matches, the
 *   failure reported is the one that got furthest: a host mismatch or an
 *   expired certificate of a chain that did lead to a trust anchor says more
 *   than "nothing matched".
 * - No usable record at all is 'tlsa-invalid'. Note RFC 7672 §2.2: when every
 *   TLSA record is unusable the client must still use TLS but need not
 *   authenticate the server, so a caller may deliver over unauthenticated TLS
 *   on this verdict rather than defer (Postfix does); it must never send in clear.
 */
export function verifyDane(records: TlsaRecord[], chain: X509Certificate[], names: string[], now: Date): DaneVerdict {
  const usable = usableTlsa(records);
  if (usable.length === 0) {
    return { ok: false, failure: 'tlsa-invalid', reason: records.length === 0 ? 'no TLSA records' : `no usable TLSA records among ${records.map(tlsaToString).join('; ')}` };
  }
  const leaf = chain[0];
  if (!leaf) return { ok: false, failure: 'validation-failure', reason: 'the server presented no certificate' };

  if (usable.some((r) => r.usage === DANE_EE && tlsaMatches(r, leaf))) return { ok: true, usage: DANE_EE };

  let best: DaneVerdict & { ok: false } = {
    ok: false,
    failure: 'validation-failure',
    reason: usable.some((r) => r.usage === DANE_TA) ? 'no DANE-TA record matches the presented chain' : 'no DANE-EE record matches the server certificate',
  };
  for (const r of usable.filter((x) => x.usage === DANE_TA)) {
    const ta = chainsToTa(r, chain, now);
    if (!ta.ok) {
      if (ta.failure === 'certificate-expired' || best.failure === 'validation-failure') best = { ok: false, failure: ta.failure, reason: ta.reason };
      continue;
    }
    if (namesHost(leaf, names) !== undefined) return { ok: true, usage: DANE_TA };
    if (best.failure !== 'certificate-expired') {
      best = { ok: false, failure: 'certificate-host-mismatch', reason: `certificate ${subjectOf(leaf)} names none of ${names.join(', ')}` };
    }
  }
  return best;
}

/** The certificate chain a TLS socket received, leaf first, without loops (node's getPeerCertificate(true) issuerCertificate links). */
export function peerChain(socket: TLSSocket): X509Certificate[] {
  const out: X509Certificate[] = [];
  const seen = new Set<string>();
  // Node links each certificate to its issuer: first from what the peer sent,
  // then (for the last one) from our own trust store, so a root the server
  // left out may appear here. A self-signed root links to itself.
  let c: PeerCertificate | undefined = socket.getPeerCertificate(true);
  while (c && c.raw && c.raw.length > 0) {
    const fp = c.fingerprint256;
    if (seen.has(fp)) break;
    seen.add(fp);
    out.push(new X509Certificate(c.raw));
    c = (c as PeerCertificate & { issuerCertificate?: PeerCertificate }).issuerCertificate;
  }
  return out;
}

/** "3 1 1 ab12…" presentation form, for TLS-RPT policy strings (RFC 8460 §4.4) and logs. */
export function tlsaToString(r: TlsaRecord): string {
  return `${r.usage} ${r.selector} ${r.matchingType} ${r.data.toString('hex')}`;
}
