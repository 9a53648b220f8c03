// Who may receive a DSN. A DSN goes to the envelope sender's return-path
// (RFC 3461 §6.2), and for mail from outside that address is whatever the
// client typed: a spammer who forges a victim's address as MAIL FROM and
// asks for NOTIFY=SUCCESS, or sends to an alias whose next hop refuses,
// would have us mail the victim (backscatter). RFC 5321 §6.2 grants that
// the strict "bounce whatever cannot be delivered" rule is not practical
// with forged senders, and says non-delivery messages SHOULD NOT be sent
// unless the site is confident they will be usefully delivered. So:
//
// - Mail from our own users (authenticated submission, trusted networks)
//   and mail made inside Tern: DSNs as the sender asked (RFC 3461 §4).
// - Mail from outside whose reverse-path was verified at acceptance (SPF
//   pass for the MAIL FROM domain itself, or a DKIM pass whose d= shares
//   the MAIL FROM domain's organizational domain, DMARC's relaxed
//   alignment, RFC 7489 §3.1.1): DSNs as asked, but a failure DSN returns
//   only the header section unless the sender asked for RET=FULL
//   (RFC 3461 §4.3 lets us choose; the body is what a spammer wants
//   reflected).
// - Mail from outside whose reverse-path was not verified (SPF fail,
//   softfail, neutral, none, errors, checks timed out, inbound checks
//   turned off in the config): no DSN of any kind. The notice is logged
//   and recorded on the message's state instead.
//
// Forwarding by alias keeps the original reverse-path (no SRS), so the
// next hop's SPF check of forwarded mail fails: that is not solved here.

import { createRequire } from 'node:module';
import type { Envelope, SenderCheck } from '../spool/types.ts';
import type { AuthOutcome } from '../intake/authenticate.ts';

// The same alignment code DMARC uses in mailauth (public suffix list from tldts, private domains included).
const tools = createRequire(import.meta.url)('mailauth/lib/tools.js') as {
  getAlignment(fromDomain: string, domains: string[], strict: boolean): unknown;
  formatDomain(domain: string): string;
};

/** The recorded check for mail from outside when the inbound checks are off: nothing outside is verified. */
export const CHECKS_DISABLED: SenderCheck = { verified: null, detail: 'inbound checks disabled' };

/** Whether the reverse-path of mail from outside is verified, from the inbound checks' outcome. */
export function checkSender(sender: string, outcome: Pick<AuthOutcome, 'spf' | 'dkim' | 'incomplete'>): SenderCheck {
  if (sender === '') return { verified: null, detail: 'null sender' };
  if (outcome.incomplete) return { verified: null, detail: `checks incomplete (${outcome.incomplete})` };
  const at = sender.lastIndexOf('@');
  const domain = at >= 0 ? sameDomain(sender.slice(at + 1)) : '';
  if (!domain || domain.startsWith('[')) return { verified: null, detail: 'no domain in the sender address' };
  // RFC 7208 §2.4: SPF authorizes the client for the MAIL FROM domain; a pass for any other identity (HELO) is not this sender.
  if (outcome.spf.result === 'pass' && outcome.spf.domain && sameDomain(outcome.spf.domain) === domain) {
    return { verified: 'spf', domain, detail: `spf=pass ${domain}` };
  }
  const dkim = outcome.dkim.find((d) => d.result === 'pass' && d.domain && tools.getAlignment(domain, [d.domain], false));
  if (dkim) return { verified: 'dkim', domain: sameDomain(dkim.domain!), detail: `dkim=pass d=${sameDomain(dkim.domain!)}` };
  return { verified: null, detail: `spf=${outcome.spf.result}, no aligned dkim pass` };
}

/** Lower case, A-labels, no trailing dot. */
function sameDomain(d: string): string {
  try {
    return tools.formatDomain(d);
  } catch {
    return d.toLowerCase().replace(/\.+$/, '');
  }
}

export type DsnPermission = { send: true; returnFull: boolean } | { send: false; reason: string };

/** Whether a DSN about this message may be sent to its sender, and whether a failure DSN may carry the whole message. */
export function dsnPermission(env: Envelope): DsnPermission {
  const o = env.outside;
  // Our own and local mail: RET absent means the whole message (RFC 3461 §4.3 leaves it to us; we return it).
  if (!o) return { send: true, returnFull: env.ret !== 'HDRS' };
  if (o.verified === null) return { send: false, reason: `sender not verified (${o.detail})` };
  return { send: true, returnFull: env.ret === 'FULL' };
}
