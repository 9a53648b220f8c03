// The one DNS resolver for everything (docs/architecture.md): MX routing, SPF, DKIM,
// DMARC, DNSBL. It wraps node's c-ares resolver with configurable servers and
// a bounded timeout, turns node's error codes into a DnsError that says
// whether the failure is worth retrying, and keeps a small positive cache.

import { Resolver as NodeResolver } from 'node:dns/promises';

/**
 * A failed lookup. `temporary` is what callers act on: a temporary failure
 * (SERVFAIL, timeout, refused, unreachable server) means "try again later",
 * a permanent one (NXDOMAIN, a malformed name) means the answer will not change.
 */
export class DnsError extends Error {
  readonly code: string;
  readonly temporary: boolean;
  constructor(code: string, temporary: boolean, message: string) {
    super(message);
    this.name = 'DnsError';
    this.code = code;
    this.temporary = temporary;
  }
}

/**
 * An error without a stack trace. Lookups fail all the time (every cached
 * NXDOMAIN answers with a fresh error), the stack of an async DNS answer
 * says nothing useful, and capturing it is most of an Error's cost.
 */
export function stackless<T>(make: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return make();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

export interface Resolver {
  /** MX records; [] when the name exists but has no MX (NODATA). Throws DnsError: NXDOMAIN permanent, SERVFAIL/timeout/refused temporary. */
  mx(name: string): Promise<{ exchange: string; priority: number }[]>;
  /** IPv4 addresses; [] on NODATA; throws as `mx`. */
  a(name: string): Promise<string[]>;
  /** IPv6 addresses; [] on NODATA; throws as `mx`. */
  aaaa(name: string): Promise<string[]>;
  /** One string[] per TXT record, its character-strings unjoined (SPF/DKIM join them). */
  txt(name: string): Promise<string[][]>;
  /**
   * Any record type, answered in the shape of node's `dns.promises.resolve(name, rrtype)`
   * (PTR: string[], MX: { exchange, priority }[], TXT: string[][], …). Unlike the methods
   * above, NODATA is not an empty list here but a permanent DnsError with code NODATA:
   * SPF counts it as a void lookup (RFC 7208 §4.6.4), so it must stay visible.
   */
  resolve(name: string, rrtype: string): Promise<unknown[]>;
}

export interface ResolverOptions {
  /**
   * How long (ms) MX and TXT answers are cached, and the cap on A/AAAA TTLs;
   * 0 turns the cache off. Node does not report TTLs for MX and TXT, so those
   * get this fixed, short lifetime.
   */
  cacheTtl?: number;
}

export const DEFAULT_CACHE_TTL = 60_000;
/** Bounded memory whatever the traffic; the oldest entry goes first. */
export const MAX_CACHE_ENTRIES = 5000;
/**
 * Each query is sent at most twice per server, so a server that drops
 * queries costs about 2 × timeout instead of c-ares' default 4 tries.
 */
const TRIES = 2;

/** Node/c-ares error codes to our codes; anything not listed is temporary under its own name. */
const ERRORS: Record<string, { code: string; temporary: boolean }> = {
  ENOTFOUND: { code: 'NXDOMAIN', temporary: false },
  EBADNAME: { code: 'BADNAME', temporary: false },
  ESERVFAIL: { code: 'SERVFAIL', temporary: true },
  ETIMEOUT: { code: 'TIMEOUT', temporary: true },
  EREFUSED: { code: 'REFUSED', temporary: true },
  ECONNREFUSED: { code: 'CONNREFUSED', temporary: true },
};

function toDnsError(err: unknown, type: string, name: string): DnsError {
  const nodeCode = (err as { code?: string }).code ?? 'UNKNOWN';
  const known = ERRORS[nodeCode] ?? { code: nodeCode.replace(/^E/, ''), temporary: true };
  return stackless(() => new DnsError(known.code, known.temporary, `DNS ${type} lookup for ${name} failed: ${known.code}`));
}

/** How long NXDOMAIN and NODATA answers are kept (RFC 2308 §5 allows up to the SOA minimum; we do not see it). */
export const NEGATIVE_CACHE_TTL = 30_000;
const EMPTY = Symbol('nodata as empty');

/** The error a cached negative answer stands for, as a fresh lookup would have thrown it. */
function negativeError(kind: 'NODATA' | 'NXDOMAIN', type: string, name: string, nodata: 'empty' | 'error'): unknown {
  if (kind === 'NODATA') return nodata === 'empty' ? EMPTY : stackless(() => new DnsError('NODATA', false, `DNS ${type} lookup for ${name} failed: NODATA`));
  return stackless(() => new DnsError('NXDOMAIN', false, `DNS ${type} lookup for ${name} failed: NXDOMAIN`));
}

export function createResolver(config: { servers: string[]; timeout: number }, options: ResolverOptions = {}): Resolver {
  const node = new NodeResolver({ timeout: config.timeout, tries: TRIES });
  if (config.servers.length > 0) node.setServers(config.servers);
  const maxTtl = options.cacheTtl ?? DEFAULT_CACHE_TTL;
  const cache = new Map<string, { expires: number; value: unknown; negative?: 'NODATA' | 'NXDOMAIN' }>();
  const negativeTtl = Math.min(NEGATIVE_CACHE_TTL, maxTtl);
  // Concurrent identical lookups share one query.
  const inflight = new Map<string, Promise<unknown>>();

  /**
   * `query` returns the answer and its TTL in ms (undefined: use maxTtl).
   * `nodata`: 'empty' answers NODATA with [], 'error' throws DnsError NODATA.
   */
  function lookup<T>(type: string, name: string, query: (n: string) => Promise<{ value: T; ttl?: number }>, nodata: 'empty' | 'error' = 'empty'): Promise<T> {
    const n = name.toLowerCase().replace(/\.$/, '');
    // The two NODATA conventions must not share an in-flight query.
    const key = `${nodata === 'empty' ? '' : '*'}${type} ${n}`;
    const hit = cache.get(key);
    if (hit && hit.expires > Date.now()) {
      if (hit.negative) return Promise.reject(negativeError(hit.negative, type, n, nodata)).catch((e: unknown) => (e === EMPTY ? ([] as T) : Promise.reject(e)));
      return Promise.resolve(structuredClone(hit.value) as T);
    }
    if (hit) cache.delete(key);
    const pending = inflight.get(key);
    if (pending) return pending.then((v) => structuredClone(v) as T);
    const p = query(n).then(
      ({ value, ttl }) => {
        const life = Math.min(ttl ?? maxTtl, maxTtl);
        // Only positive answers are kept: NODATA and errors have no TTL we can see (RFC 2308 needs the SOA).
        if (life > 0 && Array.isArray(value) && value.length > 0) {
          if (cache.size >= MAX_CACHE_ENTRIES) cache.delete(cache.keys().next().value!);
          cache.set(key, { expires: Date.now() + life, value: structuredClone(value) });
        }
        return value;
      },
      (err: unknown) => {
        const code = (err as { code?: string }).code;
        // RFC 2308 negative caching: "no such name" and "no such data" are answers
        // too. Without the SOA's minimum TTL, keep them briefly; failures (SERVFAIL,
        // timeouts) are never cached.
        if ((code === 'ENODATA' || code === 'ENOTFOUND') && negativeTtl > 0) {
          if (cache.size >= MAX_CACHE_ENTRIES) cache.delete(cache.keys().next().value!);
          cache.set(key, { expires: Date.now() + negativeTtl, value: null, negative: code === 'ENODATA' ? 'NODATA' : 'NXDOMAIN' });
        }
        // NODATA: the name exists but has no records of this type, an answer rather than a failure.
        if (code === 'ENODATA') {
          if (nodata === 'empty') return [] as T;
          throw new DnsError('NODATA', false, `DNS ${type} lookup for ${n} failed: NODATA`);
        }
        throw toDnsError(err, type, n);
      },
    );
    inflight.set(key, p);
    const done = () => inflight.delete(key);
    p.then(done, done);
    return p;
  }

  const withTtl = (records: { address: string; ttl: number }[]) => ({
    value: records.map((r) => r.address),
    ttl: records.length ? Math.min(...records.map((r) => r.ttl)) * 1000 : 0,
  });

  return {
    mx: (name) => lookup('MX', name, async (n) => ({ value: (await node.resolveMx(n)).map((r) => ({ exchange: r.exchange, priority: r.priority })) })),
    a: (name) => lookup('A', name, async (n) => withTtl(await node.resolve4(n, { ttl: true }))),
    aaaa: (name) => lookup('AAAA', name, async (n) => withTtl(await node.resolve6(n, { ttl: true }))),
    txt: (name) => lookup('TXT', name, async (n) => ({ value: await node.resolveTxt(n) })),
    resolve: (name, rrtype) => {
      const type = rrtype.toUpperCase();
      return lookup(type, name, async (n) => {
        const value = (await node.resolve(n, type)) as unknown[];
        // Node answers NOERROR with no records of the type as an empty list for some types: make it NODATA.
        if (value.length === 0) throw Object.assign(new Error('no data'), { code: 'ENODATA' });
        return { value };
      }, 'error');
    },
  };
}
