// SPF (RFC 7208): Tern's one entry point for a check_host() of an identity,
// mailauth's implementation over our resolver. Strict mode: the record is
// validated as the RFC says (syntax errors anywhere are permerror), void
// lookups are counted per RFC 7208 §4.6.4, and only the checked identity
// is reported. Both identities, MAIL FROM and HELO, are checked through
// it (authenticate.ts), so they are judged alike; the RFC 7208 test suite
// runs through this function (spf-suite.test.ts).

import { createRequire } from 'node:module';
import type { SPFOptions, SPFResult } from 'mailauth';
import type { DnsResolve } from '../dns/mailauth-resolver.ts';

const { spf } = createRequire(import.meta.url)('mailauth') as { spf(opts: SPFOptions): Promise<SPFResult> };

export interface SpfQuery {
  ip: string;
  /** The EHLO/HELO name. */
  helo?: string | undefined;
  /** MAIL FROM; '' (the null reverse-path) checks the HELO identity, RFC 7208 §2.4. */
  sender: string;
  /** Names us in the result's comment (and Authentication-Results). */
  authservId: string;
  resolve: DnsResolve;
  /** RFC 7208 §4.6.4: an elapsed-time limit (ms); past it the result is temperror. */
  timeout?: number | undefined;
}

/** The options both identities are checked with (mailauth's own names). */
export function spfOptions(q: SpfQuery): SPFOptions & { maxElapsedTime?: number | undefined } {
  return {
    ip: q.ip,
    helo: q.helo,
    sender: q.sender,
    mta: q.authservId,
    resolver: q.resolve as SPFOptions['resolver'],
    strict: true,
    maxElapsedTime: q.timeout,
  };
}

/** check_host() for MAIL FROM (or HELO when it is null); never throws, errors are temperror/permerror results. */
export function checkSpf(q: SpfQuery): Promise<SPFResult> {
  return spf(spfOptions(q));
}
