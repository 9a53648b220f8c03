// Outbound MTA-STS (RFC 8461): which policy applies to mail for a domain.
// A domain announces a policy with a `_mta-sts.<domain>` TXT record whose id
// changes with the policy (§3.1); the policy itself is a small text file at
// https://mta-sts.<domain>/.well-known/mta-sts.txt (§3.2, §3.3), fetched over
// validated TLS, and kept for its max_age. Remote delivery asks `get` before
// each attempt and applies the answer (§4, §5): in enforce mode only MX hosts
// the policy names, over TLS with a valid certificate.
//
// The point of MTA-STS is the cache: a policy once learnt keeps protecting
// the domain when an attacker later hides the TXT record or blocks the fetch
// (§3.3, §10.2). So a cached, unexpired policy wins over every failure; only
// a successful fetch replaces it. Three layers answer, cheapest first:
// memory (a hot domain costs one Map lookup per message), the store (the
// policy survives a restart), and DNS plus HTTPS.

import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { parsePolicy } from 'mailauth/lib/mta-sts.js';
import { MTA_STS_HOST_LABEL, MTA_STS_PATH, mxMatches as patternMatches } from '../smtp/mta-sts.ts';
import { DnsError, type Resolver } from '../dns/resolver.ts';
import type { CachedStsPolicy, MtaStsStore } from '../store/mta-sts.ts';
import type { Logger } from '../util/log.ts';

export interface StsPolicy {
  /** The id= of the `_mta-sts` TXT record the policy was fetched under. */
  id: string;
  mode: 'enforce' | 'testing' | 'none';
  /** MX patterns, lower case: host names, or `*.` and a domain (§3.2). */
  mx: string[];
  /** Seconds (§3.2). */
  maxAge: number;
}

/** The failure names are RFC 8460 §4.3.2.1's result types, so TLS-RPT can report them as they are. */
export type StsFailure = 'sts-policy-fetch-error' | 'sts-policy-invalid' | 'sts-webpki-invalid';

export type StsLookup =
  /** A policy in mode enforce or testing; `text` is the body as fetched (TLS-RPT's policy-string, RFC 8460 §4.4). */
  | { kind: 'policy'; policy: StsPolicy; text: string }
  /** No usable `_mta-sts` record and nothing cached, or the policy's mode is none: the domain has no policy. */
  | { kind: 'none' }
  /** A record exists but no valid policy could be had and none is cached: deliver as without a policy, and report (§5). */
  | { kind: 'error'; failure: StsFailure; reason: string };

export interface MtaStsPoliciesOptions {
  store: MtaStsStore;
  resolver: Resolver;
  log: Logger;
  /** The policy host's port (config outbound.mtaStsPort); 443 except in tests. */
  port?: number;
  /** CAs trusted besides the default ones (Node's bundled CAs plus NODE_EXTRA_CA_CERTS): in-process tests pass their test CA. */
  ca?: string | Buffer | (string | Buffer)[];
  /** Milliseconds for the whole fetch: DNS, connection, TLS, request and body. */
  timeout?: number;
  now?: () => number;
}

export const DEFAULT_POLICY_PORT = 443;
/**
 * §3.3 suggests a timeout of one minute. A delivery attempt waits for the
 * fetch (only the first message to a domain, or the first after its id
 * changed), and a policy is one small static file, so we wait far less; a
 * host that is slower is asked again after FAILED_FETCH_RETRY, and mail goes
 * on as without a policy meanwhile (§5).
 */
export const DEFAULT_FETCH_TIMEOUT = 15_000;
/** §3.3 suggests a limit of 64 KiB on the policy body; real policies are a few hundred octets. */
export const MAX_POLICY_BYTES = 64 * 1024;
/**
 * How long an answer is reused from memory before the TXT record is asked
 * again. Our resolver does not expose TXT TTLs, so this is a fixed interval:
 * a new id is noticed within it (plus the resolver's own TXT cache), which
 * is soon enough, since the old policy stays valid until its max_age anyway.
 */
export const RECHECK_INTERVAL = 5 * 60_000;
/** §3.3: after a failed fetch, wait "five minutes or longer per version ID" before trying that id again. */
export const FAILED_FETCH_RETRY = 5 * 60_000;
/** Bounded memory whatever the number of domains; the oldest entry goes first. The store keeps them all. */
export const MAX_REMEMBERED = 10_000;
/** How often expired rows are removed from the store. */
const STORE_EXPIRE_INTERVAL = 24 * 3600_000;

/** §3.1: records that do not begin with "v=STSv1" and the field delimiter are not MTA-STS records. */
const STS_RECORD_START = /^v=STSv1[ \t]*;/;
/** §3.1 sts-id: 1 to 32 letters and digits. */
const STS_ID = /^[A-Za-z0-9]{1,32}$/;
/** §3.1 sts-ext-name "=" sts-ext-value. */
const STS_EXTENSION = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}=[\x21-\x3a\x3c\x3e-\x7e]+$/;

/**
 * The id of an `_mta-sts` TXT record (its character-strings joined), or
 * null when the record is malformed (§3.1's ABNF): `v=STSv1`, then fields
 * separated by `;` with optional whitespace around it, an optional final
 * `;`, exactly one kind of field we read (`id=`, required) and extensions we
 * only check the syntax of.
 */
export function stsRecordId(record: string): string | null {
  const fields = record.split(';').map((f) => f.replace(/^[ \t]+|[ \t]+$/g, ''));
  if (fields[0] !== 'v=STSv1' || fields.length < 2) return null;
  // The ABNF allows one trailing delimiter, not an empty field between two.
  if (fields.at(-1) === '') fields.pop();
  if (fields.length < 2) return null;
  let id: string | null = null;
  for (const field of fields.slice(1)) {
    if (field.startsWith('id=')) {
      const value = field.slice(3);
      if (!STS_ID.test(value)) return null;
      // A repeated id: the first one counts.
      id ??= value;
    } else if (!STS_EXTENSION.test(field)) {
      return null;
    }
  }
  return id;
}

/**
 * The policy in `text` (§3.2), or why it is not one. mailauth's parser in
 * strict mode does the work (the same parser src/api/mta-sts.test.ts checks
 * our own policy with): `version: STSv1`, a known mode, max_age of at most
 * 31557600 seconds, at least one mx unless the mode is none, CRLF or LF
 * line ends.
 */
export function parseStsPolicy(text: string, id: string): StsPolicy | string {
  try {
    const p = parsePolicy(text, { strict: true });
    return { id, mode: p.mode, mx: p.mx ?? [], maxAge: p.maxAge ?? 0 };
  } catch (e) {
    return `the policy is not valid: ${e instanceof Error ? e.message : String(e)}`;
  }
}

/**
 * RFC 8461 §4.1: does MX host `host` match one of the policy's mx patterns?
 * A pattern names a host exactly, or `*.` matches exactly one leftmost
 * label; case and a trailing dot on the host do not matter.
 */
export function mxMatches(policy: StsPolicy, host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  // A host name never holds a wildcard: an MX named "*.example.net" matches no pattern.
  if (h === '' || h.includes('*')) return false;
  return policy.mx.some((pattern) => patternMatches(pattern, h));
}

type Fetched = { ok: true; text: string } | { ok: false; failure: StsFailure; reason: string };

/** What `get` answers from memory, until `until`. */
interface Known {
  lookup: StsLookup;
  until: number;
  /** The stored policy behind `lookup`; null for none (without a row) and errors. */
  row: CachedStsPolicy | null;
  /** When to fetch the same policy again in the background to extend its life; Infinity: never. */
  refreshAt: number;
}

interface Flight {
  promise: Promise<Known>;
  background: boolean;
}

type TxtAnswer = { id: string } | { id: null; why: string };

/**
 * The MTA-STS policies of recipient domains. `get` never throws. It waits
 * for a fetch only to learn a policy: at first contact, or when the TXT id
 * changed (then at most once per FAILED_FETCH_RETRY while the fetch fails,
 * the cached policy answering meanwhile). Renewing a known policy never
 * makes it wait: a policy past half its max_age is fetched again in the
 * background (§5.1 lets a sender look for a new policy at any time), so a
 * domain mailed at least that often never loses its policy; a domain mailed
 * less often finds it expired and learns it again, as at first contact.
 */
export class MtaStsPolicies {
  readonly #o: MtaStsPoliciesOptions;
  readonly #now: () => number;
  readonly #port: number;
  readonly #timeout: number;
  readonly #ca: (string | Buffer)[] | undefined;
  readonly #known = new Map<string, Known>();
  /** One resolution per domain at a time (single flight). */
  readonly #inflight = new Map<string, Flight>();
  /** Aborts background refreshes on close. */
  readonly #closing = new AbortController();
  #closed = false;
  #nextStoreExpire = 0;

  constructor(opts: MtaStsPoliciesOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    this.#port = opts.port ?? DEFAULT_POLICY_PORT;
    this.#timeout = opts.timeout ?? DEFAULT_FETCH_TIMEOUT;
    // Node's `ca` replaces the default trust store, so extra CAs go in with the defaults (bundled plus NODE_EXTRA_CA_CERTS).
    this.#ca = opts.ca === undefined ? undefined : [...tls.getCACertificates('default'), ...(Array.isArray(opts.ca) ? opts.ca : [opts.ca])];
  }

  /** The policy that applies to mail for `domain` now. Never throws. */
  async get(domain: string): Promise<StsLookup> {
    const d = domain.toLowerCase().replace(/\.$/, '');
    try {
      const now = this.#now();
      const known = this.#known.get(d);
      if (known && now < known.until) {
        this.#maybeRefresh(d, known, now);
        return known.lookup;
      }
      const flight = this.#inflight.get(d);
      if (flight) {
        // A background refresh is fetching: the policy we hold still applies until it expires, so do not wait for it.
        if (flight.background && known?.row && now < known.row.expiresAt) return known.lookup;
        return (await flight.promise).lookup;
      }
      const fresh = await this.#start(d, false).promise;
      this.#maybeRefresh(d, fresh, this.#now());
      return fresh.lookup;
    } catch (e) {
      // Not reached by design (#resolve catches); a bug here must not stop mail.
      this.#o.log.error('MTA-STS lookup failed', { domain: d, error: e instanceof Error ? e.message : String(e) });
      return { kind: 'none' };
    }
  }

  /** Stops background refreshes (those in flight are aborted); `get` keeps answering. */
  close(): void {
    this.#closed = true;
    this.#closing.abort();
  }

  #start(domain: string, background: boolean): Flight {
    const promise = this.#resolve(domain, background).then((k) => {
      // A refresh that could not renew the policy (fetch failed, record gone) tries again after §3.3's pause, not at the next message.
      const now = this.#now();
      if (background && k.refreshAt <= now) k.refreshAt = now + FAILED_FETCH_RETRY;
      this.#remember(domain, k);
      return k;
    });
    const flight = { promise, background };
    this.#inflight.set(domain, flight);
    const done = () => {
      if (this.#inflight.get(domain) === flight) this.#inflight.delete(domain);
    };
    promise.then(done, done);
    return flight;
  }

  #remember(domain: string, k: Known): void {
    this.#known.delete(domain);
    if (this.#known.size >= MAX_REMEMBERED) this.#known.delete(this.#known.keys().next().value!);
    this.#known.set(domain, k);
  }

  #maybeRefresh(domain: string, k: Known, now: number): void {
    if (this.#closed || now < k.refreshAt || this.#inflight.has(domain)) return;
    // Not again from memory until this one has finished: the refresh sets its own next time.
    k.refreshAt = Infinity;
    this.#start(domain, true);
  }

  /**
   * The answer for `domain` by the store, DNS and HTTPS (§5.1's control
   * flow). `refresh`: fetch even when the TXT id matches the cached policy,
   * to renew it before it expires. Never rejects.
   */
  async #resolve(domain: string, refresh: boolean): Promise<Known> {
    const now = this.#now();
    const cached = this.#cached(domain, now);
    const txt = await this.#txtId(domain);
    if (txt.id === null) {
      // §3.1: no valid record means no MTA-STS, unless a policy is cached: a
      // vanished record does not end it (§10.2: a domain withdraws with mode none first).
      if (cached) return this.#fromRow(cached.row, cached.lookup, this.#now());
      this.#o.log.debug('no MTA-STS policy', { domain, why: txt.why });
      return { lookup: { kind: 'none' }, until: now + RECHECK_INTERVAL, row: null, refreshAt: Infinity };
    }
    if (cached && cached.row.policyId === txt.id && !refresh) return this.#fromRow(cached.row, cached.lookup, this.#now());

    let fetched: Fetched;
    try {
      fetched = await this.#fetch(domain, refresh ? this.#closing.signal : undefined);
    } catch (e) {
      // Not expected (the fetch reports its failures); if it happens, it is one more failed fetch.
      fetched = { ok: false, failure: 'sts-policy-fetch-error', reason: e instanceof Error ? e.message : String(e) };
    }
    const at = this.#now();
    let failure: { failure: StsFailure; reason: string };
    if (fetched.ok) {
      const policy = parseStsPolicy(fetched.text, txt.id);
      if (typeof policy !== 'string') {
        const row: CachedStsPolicy = { domain, policyId: txt.id, policy: fetched.text, fetchedAt: at, expiresAt: at + policy.maxAge * 1000 };
        try {
          this.#o.store.put(row);
        } catch (e) {
          this.#o.log.error('MTA-STS policy not stored', { domain, error: e instanceof Error ? e.message : String(e) });
        }
        if (!cached || cached.row.policyId !== txt.id || cached.row.policy !== fetched.text) {
          this.#o.log.info('MTA-STS policy fetched', { domain, id: txt.id, mode: policy.mode, mx: policy.mx, maxAge: policy.maxAge });
        }
        return this.#fromRow(row, lookupOf(policy, fetched.text), at);
      }
      failure = { failure: 'sts-policy-invalid', reason: policy };
    } else {
      failure = fetched;
    }
    if (!this.#closed) this.#o.log.warn('MTA-STS policy fetch failed', { domain, id: txt.id, failure: failure.failure, reason: failure.reason, cached: cached?.row.policyId ?? null });
    // §5.1: a valid cached policy stays in force when a new one cannot be
    // had; the fetch is tried again after §3.3's pause. A cached mode none
    // enforces nothing, so the failure to learn the new policy is reported instead.
    if (cached && cached.lookup.kind === 'policy') {
      return { lookup: cached.lookup, until: Math.min(at + FAILED_FETCH_RETRY, cached.row.expiresAt), row: cached.row, refreshAt: at + FAILED_FETCH_RETRY };
    }
    return { lookup: { kind: 'error', ...failure }, until: at + FAILED_FETCH_RETRY, row: null, refreshAt: Infinity };
  }

  /** A stored policy as an answer: kept in memory until the next recheck (or its expiry), renewed after half its max_age. */
  #fromRow(row: CachedStsPolicy, lookup: StsLookup, now: number): Known {
    return {
      lookup,
      until: Math.min(now + RECHECK_INTERVAL, row.expiresAt),
      row,
      refreshAt: lookup.kind === 'policy' ? row.fetchedAt + (row.expiresAt - row.fetchedAt) / 2 : Infinity,
    };
  }

  /** The domain's stored, unexpired, still parseable policy; expired rows are dropped on the way. */
  #cached(domain: string, now: number): { row: CachedStsPolicy; lookup: StsLookup } | null {
    try {
      if (now >= this.#nextStoreExpire) {
        this.#nextStoreExpire = now + STORE_EXPIRE_INTERVAL;
        this.#o.store.expire(now);
      }
      const row = this.#o.store.get(domain);
      if (!row) return null;
      if (row.expiresAt <= now) {
        this.#o.store.delete(domain);
        return null;
      }
      const policy = parseStsPolicy(row.policy, row.policyId);
      if (typeof policy === 'string') return null;
      return { row, lookup: lookupOf(policy, row.policy) };
    } catch (e) {
      this.#o.log.error('MTA-STS policy cache unreadable', { domain, error: e instanceof Error ? e.message : String(e) });
      return null;
    }
  }

  /** §3.1: the id of the one `v=STSv1` record at `_mta-sts.<domain>`, or why there is none. */
  async #txtId(domain: string): Promise<TxtAnswer> {
    let records: string[][];
    try {
      records = await this.#o.resolver.txt(`_mta-sts.${domain}`);
    } catch (e) {
      // NXDOMAIN: no record. A temporary failure tells nothing; either way a cached policy still applies.
      if (e instanceof DnsError && !e.temporary) return { id: null, why: `no _mta-sts record (${e.code})` };
      return { id: null, why: `_mta-sts lookup failed: ${e instanceof Error ? e.message : String(e)}` };
    }
    const sts = records.map((r) => r.join('')).filter((r) => STS_RECORD_START.test(r));
    if (sts.length === 0) return { id: null, why: 'no v=STSv1 record' };
    // §3.1: "If the number of resulting records is not one ... senders MUST assume the Policy Domain does not implement MTA-STS".
    if (sts.length > 1) return { id: null, why: `${sts.length} v=STSv1 records, where one is allowed` };
    const id = stsRecordId(sts[0]!);
    return id === null ? { id: null, why: `malformed record: ${sts[0]}` } : { id };
  }

  /**
   * §3.3: GET https://mta-sts.<domain>/.well-known/mta-sts.txt with a
   * certificate valid for that name, 200 only (no redirect is followed),
   * text/plain (§3.2), at most MAX_POLICY_BYTES, all within the timeout.
   * No HTTP cache and no connection reuse: every fetch is a new connection.
   */
  #fetch(domain: string, signal: AbortSignal | undefined): Promise<Fetched> {
    const host = `${MTA_STS_HOST_LABEL}.${domain}`;
    const authority = this.#port === DEFAULT_POLICY_PORT ? host : `${host}:${this.#port}`;
    const url = `https://${authority}${MTA_STS_PATH}`;
    return new Promise<Fetched>((resolve) => {
      let socket: tls.TLSSocket | undefined;
      let identityError: Error | undefined;
      let settled = false;
      const finish = (r: Fetched): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        socket?.destroy();
        resolve(r);
      };
      const fail = (failure: StsFailure, reason: string): void => finish({ ok: false, failure, reason: `${url}: ${reason}` });
      const timer = setTimeout(() => fail('sts-policy-fetch-error', `no complete answer within ${this.#timeout} ms`), this.#timeout);
      const onAbort = (): void => fail('sts-policy-fetch-error', 'aborted (shutting down)');
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort);

      socket = tls.connect({
        host,
        port: this.#port,
        servername: host,
        lookup: this.#lookup,
        ...(this.#ca ? { ca: this.#ca } : {}),
        // Checked below, before a byte of the request is sent, so that a
        // certificate failure is told apart from other failures (RFC 8460:
        // sts-webpki-invalid).
        rejectUnauthorized: false,
        checkServerIdentity: (name, cert) => {
          identityError = tls.checkServerIdentity(name, cert);
          return identityError;
        },
      });
      socket.on('error', (e) => fail('sts-policy-fetch-error', e.message));
      socket.once('secureConnect', () => {
        const s = socket!;
        if (!s.authorized) {
          const why = identityError?.message ?? `verification failed (${String(s.authorizationError)})`;
          fail('sts-webpki-invalid', `the certificate is not valid for ${host}: ${why}`);
          return;
        }
        const req = http.request({
          createConnection: () => s,
          method: 'GET',
          path: MTA_STS_PATH,
          headers: { host: authority, accept: 'text/plain', connection: 'close' },
        });
        req.on('error', (e) => fail('sts-policy-fetch-error', e.message));
        req.on('response', (res) => {
          res.on('error', (e) => fail('sts-policy-fetch-error', e.message));
          // §3.3: only a 200 is a policy; a 3xx is not followed.
          if (res.statusCode !== 200) {
            const where = res.statusCode && res.statusCode >= 300 && res.statusCode < 400 ? ` (a redirect to ${res.headers.location ?? 'nowhere'}; redirects are not followed)` : '';
            fail('sts-policy-fetch-error', `HTTP status ${res.statusCode}${where}`);
            return;
          }
          // §3.2: the policy is text/plain; parameters such as charset may follow.
          const type = (res.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
          if (type !== 'text/plain') {
            fail('sts-policy-invalid', `media type ${JSON.stringify(res.headers['content-type'] ?? '')}, not text/plain`);
            return;
          }
          const tooBig = `the policy is larger than ${MAX_POLICY_BYTES} octets`;
          if (Number(res.headers['content-length']) > MAX_POLICY_BYTES) {
            fail('sts-policy-invalid', tooBig);
            return;
          }
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_POLICY_BYTES) fail('sts-policy-invalid', tooBig);
            else chunks.push(chunk);
          });
          res.on('end', () => {
            if (!res.complete) {
              fail('sts-policy-fetch-error', 'the connection closed before the end of the policy');
              return;
            }
            try {
              finish({ ok: true, text: new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks, size)) });
            } catch {
              fail('sts-policy-invalid', 'the policy is not UTF-8 text');
            }
          });
          res.on('close', () => {
            if (!res.complete) fail('sts-policy-fetch-error', 'the connection closed before the end of the policy');
          });
        });
        req.end();
      });
    });
  }

  /** net's lookup hook, through our resolver (its servers, timeouts and cache): every A and AAAA address, for Happy Eyeballs. */
  readonly #lookup: net.LookupFunction = (hostname, options, callback) => {
    const { resolver } = this.#o;
    void Promise.allSettled([resolver.a(hostname), resolver.aaaa(hostname)]).then(([v4, v6]) => {
      const addresses = [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
      if (addresses.length === 0) {
        const cause = v4.status === 'rejected' ? (v4.reason as Error).message : 'no A or AAAA record';
        const err: NodeJS.ErrnoException = Object.assign(new Error(`${hostname} has no address: ${cause}`), { code: 'ENOTFOUND' });
        callback(err, '', 0);
        return;
      }
      if (options.all) callback(null, addresses.map((address) => ({ address, family: net.isIP(address) })));
      else callback(null, addresses[0]!, net.isIP(addresses[0]!));
    });
  };
}

function lookupOf(policy: StsPolicy, text: string): StsLookup {
  // §5: "none" means the domain has no active policy; it is still stored, so the same id is not fetched again.
  return policy.mode === 'none' ? { kind: 'none' } : { kind: 'policy', policy, text };
}
