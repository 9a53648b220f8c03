// An example Tern plugin (docs/plugins.md): refuse HELO/EHLO names that lie.
//
//   - A bare IP address ("EHLO 192.0.2.7"): RFC 5321 §4.1.3 writes an
//     address as a literal in brackets ("EHLO [192.0.2.7]"); real MTAs do,
//     spam tools often do not.
//   - Our own name, one of our domains, or one of our listener addresses as
//     a literal: whoever says that to us from outside is not us.
//
// Only on the smtp (MX) listener, and never for a client that authenticated:
// mail clients on the submission ports are known to send odd names.
//
// Enable it with, in tern.yaml:
//   plugins: [./plugins/helo-checks.ts]
//
// Only type imports from Tern, so the file works wherever it is copied:
// the error class comes in through the factory's context.

import net from 'node:net';
import type { Check, SessionInfo } from '../../src/policy/policy.ts';
import type { PluginContext } from '../../src/policy/plugins.ts';

export default function heloChecks({ config, SmtpError, log }: PluginContext): Check {
  const ourNames = new Set([config.hostname, ...config.domains.map((d) => d.name)].map((n) => n.toLowerCase()));
  // 0.0.0.0 and :: are "every address", not an address anyone can claim.
  const ourAddresses = new Set(config.listeners.map((l) => l.address).filter((a) => a !== '0.0.0.0' && a !== '::'));

  return {
    name: 'helo-checks',
    helo(s: SessionInfo, name: string): void {
      if (s.role !== 'smtp' || s.user !== undefined) return;
      const host = name.toLowerCase().replace(/\.$/, '');
      if (net.isIP(host) !== 0) {
        log.info('helo refused: bare IP', { conn: s.id, ip: s.remoteAddress, helo: name });
        throw new SmtpError(550, '5.7.1', `HELO ${name} refused: write an IP address as a literal, e.g. [${host}]`);
      }
      const literal = /^\[(?:ipv6:)?([^\]]+)\]$/.exec(host)?.[1];
      // A literal of the client's own address is the truth, even on a shared host.
      const claimsOurAddress = literal !== undefined && ourAddresses.has(literal) && literal !== s.remoteAddress;
      if (ourNames.has(host) || claimsOurAddress) {
        log.info('helo refused: claims to be us', { conn: s.id, ip: s.remoteAddress, helo: name });
        throw new SmtpError(550, '5.7.1', `HELO ${name} refused: that is our name, not yours`);
      }
    },
  };
}
