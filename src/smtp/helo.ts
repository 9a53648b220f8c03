// The argument of EHLO/HELO (RFC 5321 §4.1.1.1): a domain or an address
// literal, nothing else. It is echoed in our 250 and written into the
// Received: field of every message of the session, so any byte outside this
// grammar (controls, spaces, quotes, parentheses, non-ASCII) would reach a
// reply line or a header.
//
//   ehlo             = "EHLO" SP ( Domain / address-literal ) CRLF
//   Domain           = sub-domain *("." sub-domain)
//   sub-domain       = Let-dig [Ldh-str]
//   address-literal  = "[" ( IPv4-address-literal / IPv6-address-literal /
//                      General-address-literal ) "]"              (§4.1.3)
//
// Two deliberate departures, both toward what real clients send:
// - Underscores are accepted in labels ("EHLO my_pc.example"): Windows
//   machine names carry them and Postfix accepts them by default
//   (reject_invalid_helo_hostname is opt-in there and allows "_" too).
// - One trailing dot is accepted ("EHLO mx.example.") as the root of an
//   absolute name; it changes nothing we write.
// Names are ASCII only: an internationalized name goes in its A-label form
// (RFC 5890 §2.3.2.1, "xn--…"), so the Received: field stays ASCII.

import { isAddressLiteral, MAX_DOMAIN } from './address.ts';

/** Let-dig [Ldh-str] with "_" allowed anywhere a letter is; ≤ 63 octets (RFC 1035 §2.3.4). */
const LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;

/**
 * General-address-literal = Standardized-tag ":" 1*dcontent (§4.1.3);
 * Standardized-tag = Ldh-str; dcontent = %d33-90 / %d94-126.
 */
const GENERAL_LITERAL = /^\[[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+\]$/;

/** True when `s` is a valid EHLO/HELO argument: a domain or an address literal. */
export function isHeloArgument(s: string): boolean {
  if (s.length === 0 || s.length > MAX_DOMAIN) return false;
  if (s.startsWith('[')) {
    if (isAddressLiteral(s)) return true;
    // "IPv6:" is a standardized tag whose content must be an IPv6 address:
    // a bad one is not let through as a general literal instead.
    return GENERAL_LITERAL.test(s) && !/^\[ipv6:/i.test(s);
  }
  const name = s.endsWith('.') ? s.slice(0, -1) : s;
  if (name.length === 0) return false;
  for (const label of name.split('.')) if (!LABEL.test(label)) return false;
  return true;
}
