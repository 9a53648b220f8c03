// Envelope address syntax, RFC 5321 §4.1.2 (with RFC 6531 for UTF-8).
//
//   Path       = "<" [ A-d-l ":" ] Mailbox ">"
//   Mailbox    = Local-part "@" ( Domain / address-literal )
//   Local-part = Dot-string / Quoted-string
//
// Strict on purpose: the open-relay tricks (user@a@b, trailing dots, unquoted
// specials) fail here rather than being guessed at. Source routes are
// accepted and ignored (§3.3, §C), so the relay decision is always made on
// the final mailbox's domain.

import { SmtpError } from './reply.ts';

export interface Address {
  /** Local part as sent, unquoted (a quoted-string's content with escapes removed). */
  local: string;
  /** Domain as sent, lower-cased; an address literal keeps its brackets. */
  domain: string;
  /** True when the domain is an address literal such as [192.0.2.1]. */
  literal: boolean;
  /** True when local or domain contains non-ASCII (needs SMTPUTF8). */
  utf8: boolean;
}

/** RFC 5321 §4.5.3.1 size limits. */
export const MAX_LOCAL_PART = 64;
export const MAX_DOMAIN = 255;
export const MAX_PATH = 256;

// atext of RFC 5322 §3.2.3, plus any non-ASCII (RFC 6531 §3.3 UTF8-non-ascii).
const ATEXT = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\u{10FFFF}]+$/u;
const LABEL = /^(?:[A-Za-z0-9\u0080-\u{10FFFF}](?:[A-Za-z0-9\u0080-\u{10FFFF}-]*[A-Za-z0-9\u0080-\u{10FFFF}])?)$/u;

export function formatAddress(a: Address | null): string {
  if (a === null) return '';
  return `${quoteLocal(a.local)}@${a.domain}`;
}

export function quoteLocal(local: string): string {
  if (local.split('.').every((atom) => atom.length > 0 && ATEXT.test(atom))) return local;
  return `"${local.replace(/(["\\])/g, '\\$1')}"`;
}

/**
 * Parse "<...>" (with optional source route). `allowNull` admits "<>"
 * (the reverse-path of bounces, §4.5.5). Returns the address and the
 * unparsed rest (ESMTP parameters). Throws SmtpError 501/553.
 */
export function parsePath(input: string, allowNull: boolean): { address: Address | null; rest: string } {
  if (!input.startsWith('<')) throw new SmtpError(501, '5.5.4', 'Syntax error: address must be in angle brackets');
  const close = findClosingBracket(input);
  if (close < 0) throw new SmtpError(501, '5.5.4', 'Syntax error: missing closing angle bracket');
  const inner = input.slice(1, close);
  const rest = input.slice(close + 1);
  if (rest.length > 0 && !rest.startsWith(' ')) throw new SmtpError(501, '5.5.4', 'Syntax error after address');
  if (Buffer.byteLength(inner) + 2 > MAX_PATH) throw new SmtpError(501, '5.1.3', 'Path too long');
  if (inner === '') {
    if (!allowNull) throw new SmtpError(501, '5.1.3', 'Null address not allowed here');
    return { address: null, rest: rest.trim() };
  }
  let mailbox = inner;
  if (mailbox.startsWith('@')) {
    // A-d-l = At-domain *( "," At-domain ) ":" — validated, then ignored.
    const colon = mailbox.indexOf(':');
    if (colon < 0) throw new SmtpError(501, '5.1.3', 'Bad source route');
    for (const hop of mailbox.slice(0, colon).split(',')) {
      if (!hop.startsWith('@') || !isDomain(hop.slice(1))) throw new SmtpError(501, '5.1.3', 'Bad source route');
    }
    mailbox = mailbox.slice(colon + 1);
  }
  return { address: parseMailbox(mailbox), rest: rest.trim() };
}

function findClosingBracket(s: string): number {
  let quoted = false;
  for (let i = 1; i < s.length; i++) {
    const c = s[i];
    if (quoted) {
      if (c === '\\') i++;
      else if (c === '"') quoted = false;
    } else if (c === '"') quoted = true;
    else if (c === '>') return i;
  }
  return -1;
}

/** Parse `local@domain` (no brackets). Throws SmtpError 501 5.1.3 on bad syntax. */
export function parseMailbox(s: string): Address {
  let local: string;
  let i: number;
  if (s.startsWith('"')) {
    // Quoted-string = DQUOTE *QcontentSMTP DQUOTE (§4.1.2)
    let out = '';
    i = 1;
    for (;;) {
      if (i >= s.length) throw bad('Unterminated quoted local part');
      const c = s[i]!;
      if (c === '"') break;
      if (c === '\\') {
        const n = s[i + 1];
        if (n === undefined || n < ' ' || n > '~') throw bad('Bad quoted pair');
        out += n;
        i += 2;
        continue;
      }
      if (c < ' ' || c === '\x7f') throw bad('Control character in local part');
      out += c;
      i++;
    }
    local = out;
    i++;
    if (s[i] !== '@') throw bad('Expected @ after quoted local part');
  } else {
    i = s.lastIndexOf('@');
    if (i <= 0) throw bad(i === 0 ? 'Empty local part' : 'Address must contain @domain');
    local = s.slice(0, i);
    // Dot-string = Atom *("." Atom): no empty atoms, no specials (this
    // rejects user@remote@local, since "@" is not atext).
    for (const atom of local.split('.')) {
      if (atom.length === 0 || !ATEXT.test(atom)) throw bad('Bad local part syntax');
    }
  }
  if (Buffer.byteLength(local) > MAX_LOCAL_PART) throw bad('Local part too long');
  const rawDomain = s.slice(i + 1);
  if (rawDomain.length === 0) throw bad('Empty domain');
  let literal = false;
  if (rawDomain.startsWith('[')) {
    if (!isAddressLiteral(rawDomain)) throw new SmtpError(501, '5.1.2', 'Bad address literal');
    literal = true;
  } else if (!isDomain(rawDomain)) {
    throw new SmtpError(501, '5.1.2', 'Bad domain syntax');
  }
  const domain = rawDomain.toLowerCase();
  const utf8 = /[^\x00-\x7f]/.test(local) || /[^\x00-\x7f]/.test(domain);
  return { local, domain, literal, utf8 };
}

function bad(text: string): SmtpError {
  return new SmtpError(501, '5.1.3', text);
}

/** Domain = sub-domain *("." sub-domain); no trailing dot, labels ≤ 63, total ≤ 255. */
export function isDomain(d: string): boolean {
  if (d.length === 0 || Buffer.byteLength(d) > MAX_DOMAIN) return false;
  for (const label of d.split('.')) {
    if (label.length === 0 || label.length > 63 || !LABEL.test(label)) return false;
  }
  return true;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** address-literal = "[" ( IPv4 / "IPv6:" IPv6 / General ) "]" (§4.1.3); we take IPv4 and IPv6. */
export function isAddressLiteral(d: string): boolean {
  if (!d.startsWith('[') || !d.endsWith(']')) return false;
  const body = d.slice(1, -1);
  if (IPV4.test(body)) return true;
  if (/^ipv6:/i.test(body)) return isIPv6(body.slice(5));
  return false;
}

function isIPv6(s: string): boolean {
  // Defer to the URL parser's host grammar rather than hand-rolling RFC 4291.
  if (!/^[0-9A-Fa-f:.]+$/.test(s)) return false;
  try {
    new URL(`http://[${s}]/`);
    return true;
  } catch {
    return false;
  }
}

/** The IP inside an address literal ("[1.2.3.4]" → "1.2.3.4", "[IPv6:::1]" → "::1"). */
export function literalIp(domain: string): string {
  const body = domain.slice(1, -1);
  return /^ipv6:/i.test(body) ? body.slice(5) : body;
}
