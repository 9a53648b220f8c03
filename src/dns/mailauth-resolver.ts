// mailauth's resolver contract on top of ours. mailauth (SPF, DKIM, DMARC,
// ARC) calls `resolver(name, rrtype)` exactly like node's
// `dns.promises.resolve` and tells results apart by node's error codes:
// ENOTFOUND and ENODATA are answers (SPF counts them as void lookups, RFC
// 7208 §4.6.4; DKIM says "no key"; DMARC "no record"), EBADNAME a name that
// cannot exist (permerror), and everything else a temporary failure
// (temperror). Going through our Resolver keeps one set of servers,
// timeouts and one cache for all of Tern's lookups.

import { DnsError, stackless, type Resolver } from './resolver.ts';

/** The `dns.promises.resolve(name, rrtype)` shape mailauth expects for its `resolver` option. */
export type DnsResolve = (name: string, rrtype: string) => Promise<unknown[]>;

/** Our DnsError codes back to the node/c-ares codes mailauth switches on. */
const NODE_CODES: Record<string, string> = {
  NXDOMAIN: 'ENOTFOUND',
  NODATA: 'ENODATA',
  BADNAME: 'EBADNAME',
  SERVFAIL: 'ESERVFAIL',
  TIMEOUT: 'ETIMEOUT',
  REFUSED: 'EREFUSED',
  CONNREFUSED: 'ECONNREFUSED',
};

/** A node-style DNS error: an Error with `code`, `hostname` and `syscall`, as `dns.promises` throws. */
export function nodeDnsError(code: string, name: string, rrtype: string): Error {
  return Object.assign(stackless(() => new Error(`query${rrtype} ${code} ${name}`)), { code, hostname: name, syscall: `query${rrtype}` });
}

export function mailauthResolver(resolver: Resolver): DnsResolve {
  return async (name, rrtype) => {
    try {
      return await resolver.resolve(name, rrtype);
    } catch (e) {
      if (!(e instanceof DnsError)) throw e;
      // Unknown codes stay temporary under their own name (mailauth: temperror).
      throw nodeDnsError(NODE_CODES[e.code] ?? `E${e.code}`, name, rrtype);
    }
  };
}
