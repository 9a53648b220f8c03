// Why a recipient failed, in words an application can act on: the
// `bounceClass` of deferred, bounced and expired events. The managed relays
// give the same kind of label (SES bounce sub-types, SendGrid's bounce
// classifications, Postmark's bounce types); ours is decided from the
// reply's RFC 3463 enhanced status code first, because that is the part of
// a reply standardized to be read by programs (RFC 3463 §1), and from the
// reply text only where the code cannot tell (a 5.7.1 is any refusal by
// policy; its text says whether a blocklist was the reason) or is missing.
//
//   class              enhanced codes (x = 4 or 5)           or, without a telling code, text like
//   invalid-recipient  x.1.0 x.1.1 x.1.3 x.1.5 x.1.6 x.1.10  "user unknown", "no such user"
//                      x.2.1 (mailbox disabled)
//   mailbox-full       x.2.2                                 "mailbox full", "over quota"
//   dns                x.1.2 x.4.3 x.4.4 x.4.6               "domain not found", "no MX"
//   tls                x.7.10 x.7.11 x.7.30 x.7.5            "STARTTLS", "TLS", "certificate"
//   timeout            x.4.1 x.4.2 when the text says so      "timed out", "timeout"
//   connection         x.4.1 x.4.2 x.4.0                     "connection refused", "reset"
//   spam-block         x.7.x x.6.0 with a blocklist or spam   "spam", "blocklist", "RBL", "reputation", "Spamhaus"
//                      word in the text
//   policy             the rest of x.7.x, x.1.7 x.1.8        "not permitted", "relay denied", "greylisted"
//   content            x.6.x, x.3.4 x.2.3 (too big)          "message too large"
//   system             x.3.x (other), x.2.4                   "system", "resources"
//   protocol           x.5.x                                  "syntax", "command"
//   expired            4.4.7 (queue.maxLifetime reached)
//   other              anything else
//
// The invalid-recipient class and the automatic suppression rule (5.1.x
// but x.1.7/x.1.8, which are about the sender; and 5.2.1: src/suppress/)
// agree except for x.1.2, a destination domain that does not exist: its
// class is dns, and its recipient is suppressed too.

import type { DeliveryReply } from '../spool/types.ts';

export type BounceClass =
  | 'invalid-recipient'
  | 'mailbox-full'
  | 'dns'
  | 'tls'
  | 'timeout'
  | 'connection'
  | 'spam-block'
  | 'policy'
  | 'content'
  | 'system'
  | 'protocol'
  | 'expired'
  | 'other';

export const BOUNCE_CLASSES: readonly BounceClass[] = [
  'invalid-recipient', 'mailbox-full', 'dns', 'tls', 'timeout', 'connection', 'spam-block', 'policy', 'content', 'system', 'protocol', 'expired', 'other',
];

/** Words that make a refusal a reputation or content-filter block (checked on 5.7.x and 5.6.0 texts). */
const SPAM = /\b(spam|spamhaus|spamcop|black ?list|block ?list|blocked|rbl|dnsbl|reputation|listed (in|at|on)|junk)\b/i;
const TIMEOUT = /\btime[sd]? ?out\b|\btimed out\b/i;
const TLS_TEXT = /\b(starttls|tls|ssl|certificate)\b/i;

/** By the enhanced code's subject (x.N.y) and detail (x.n.N); undefined: not decided by the code alone. */
function byCode(subject: string, detail: string, text: string): BounceClass | undefined {
  switch (subject) {
    case '1':
      if (detail === '2') return 'dns';
      if (detail === '7' || detail === '8') return 'policy'; // the sender's address (RFC 3463 §3.2)
      return 'invalid-recipient';
    case '2':
      if (detail === '1') return 'invalid-recipient'; // mailbox disabled
      if (detail === '2') return 'mailbox-full';
      if (detail === '3') return 'content'; // message length exceeds a mailbox limit
      if (detail === '4') return 'system'; // mailing list expansion
      return 'other';
    case '3':
      return detail === '4' ? 'content' : 'system';
    case '4':
      if (detail === '7') return 'expired';
      if (detail === '3' || detail === '4' || detail === '6') return 'dns';
      return TIMEOUT.test(text) ? 'timeout' : 'connection';
    case '5':
      return 'protocol';
    case '6':
      return detail === '0' && SPAM.test(text) ? 'spam-block' : 'content';
    case '7':
      if (detail === '10' || detail === '11' || detail === '30' || detail === '5') return 'tls';
      return SPAM.test(text) ? 'spam-block' : 'policy';
    default:
      return undefined;
  }
}

/** Without an enhanced code (or with x.0.0): the reply text decides, else 'other'. */
function byText(text: string): BounceClass {
  if (/\b(user|mailbox|recipient|address)\b.*\b(unknown|not found|does not exist|doesn't exist|no such|invalid|disabled|inactive)\b|\bno such (user|mailbox|recipient)\b|\bunknown (user|recipient)\b/i.test(text)) return 'invalid-recipient';
  if (/\b(mailbox|quota|storage)\b.*\b(full|exceeded)\b|\bover quota\b|\binsufficient (storage|space)\b/i.test(text)) return 'mailbox-full';
  if (SPAM.test(text)) return 'spam-block';
  if (TIMEOUT.test(text)) return 'timeout';
  if (TLS_TEXT.test(text)) return 'tls';
  if (/\b(nxdomain|no mx|domain (not found|does not exist)|host not found|dns)\b/i.test(text)) return 'dns';
  if (/\b(connection (refused|reset|closed)|econnrefused|econnreset|unreachable)\b/i.test(text)) return 'connection';
  if (/\b(too (large|big)|size limit|message size)\b/i.test(text)) return 'content';
  if (/\b(not permitted|denied|relay|policy|greylist)/i.test(text)) return 'policy';
  return 'other';
}

export function bounceClass(reply: DeliveryReply): BounceClass {
  const e = reply.enhanced;
  if (e !== null) {
    const [, subject = '', detail = ''] = e.split('.');
    if (subject !== '0') {
      const c = byCode(subject, detail, reply.text);
      if (c) return c;
    }
  }
  return byText(reply.text);
}
