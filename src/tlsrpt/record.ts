// The `_smtp._tls.<policy domain>` TXT record (RFC 8460 §3): where a domain
// wants its reports. Socket-free: the reporter looks the TXT up and hands
// the answer here.
//
//   tlsrpt-record  = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim]
//   field-delim    = *WSP ";" *WSP
//   tlsrpt-version = %s"v=TLSRPTv1"
//   tlsrpt-rua     = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)
//   tlsrpt-extension = tlsrpt-ext-name "=" tlsrpt-ext-value
//
// §3: records that do not start with the version are not TLSRPT records;
// if there is not exactly one that does, or it does not parse, the domain
// has no TLSRPT and gets no report.

import { formatAddress, parseMailbox } from '../smtp/address.ts';

/** One place to send a report. `uri` is as published: the key under which a delivery is remembered. */
export type TlsRptDestination = { kind: 'mailto'; uri: string; addresses: string[] } | { kind: 'https'; uri: string; url: URL };

/**
 * More destinations than any domain needs; each is a message or a POST per
 * day, so a record listing hundreds must not turn us into an amplifier.
 */
export const MAX_RUA = 5;

const VERSION = /^v=TLSRPTv1[ \t]*(?:;|$)/;
const EXT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
const EXT_VALUE = /^[\x21-\x3a\x3c\x3e-\x7e]+$/;

/**
 * The destinations of the domain's one TLSRPT record, or null: no record,
 * several, or one that does not parse (RFC 8460 §3). `txt` is the lookup's
 * answer, one string[] per record (its character-strings, joined here, as
 * §3 says a record split into several strings is read as one).
 * Destinations of other schemes than mailto: and https:, and those that do
 * not parse, are skipped; a record left with none is null too.
 */
export function parseTlsRptRecord(txt: readonly (readonly string[])[]): TlsRptDestination[] | null {
  const records = txt.map((strings) => strings.join('')).filter((r) => VERSION.test(r));
  if (records.length !== 1) return null;
  const fields = records[0]!.split(';').map((f) => f.replace(/^[ \t]+|[ \t]+$/g, ''));
  // A trailing delimiter leaves one empty field; any other empty field is a syntax error.
  if (fields.length > 1 && fields[fields.length - 1] === '') fields.pop();
  let rua: string | null = null;
  for (const f of fields.slice(1)) {
    const eq = f.indexOf('=');
    if (eq <= 0) return null;
    const name = f.slice(0, eq);
    const value = f.slice(eq + 1);
    if (name === 'rua') {
      if (rua !== null) return null; // one rua field; its value is the list
      rua = value;
    } else if (!EXT_NAME.test(name) || !EXT_VALUE.test(value)) {
      return null;
    }
  }
  if (rua === null || rua === '') return null;
  const out: TlsRptDestination[] = [];
  for (const uri of rua.split(',').map((u) => u.replace(/^[ \t]+|[ \t]+$/g, ''))) {
    if (uri === '') return null;
    const d = destination(uri);
    if (d !== null && !out.some((o) => o.uri === d.uri)) out.push(d);
    if (out.length === MAX_RUA) break;
  }
  return out.length > 0 ? out : null;
}

function destination(uri: string): TlsRptDestination | null {
  const colon = uri.indexOf(':');
  const scheme = uri.slice(0, colon).toLowerCase();
  if (scheme === 'mailto') {
    // RFC 6068: mailto:addr-spec[,addr-spec…][?hfields], percent-encoded. hfields (a subject, a body) are ignored: the report's are fixed.
    const query = uri.indexOf('?');
    const to = uri.slice(colon + 1, query === -1 ? undefined : query);
    let decoded: string;
    try {
      decoded = decodeURIComponent(to);
    } catch {
      return null;
    }
    // The rua list is split at raw commas, so several addresses in one mailto: come percent-encoded (%2C).
    const addresses: string[] = [];
    for (const part of decoded.split(',')) {
      const a = part.trim();
      if (a === '' || /[\x00-\x20\x7f<>]/.test(a)) return null;
      let address: string;
      try {
        address = formatAddress(parseMailbox(a));
      } catch {
        return null;
      }
      if (!addresses.includes(address)) addresses.push(address);
    }
    return addresses.length > 0 ? { kind: 'mailto', uri, addresses } : null;
  }
  if (scheme === 'https') {
    let url: URL;
    try {
      url = new URL(uri);
    } catch {
      return null;
    }
    // Credentials in a published URI would be sent to whoever reads the zone; refuse rather than guess.
    if (url.username !== '' || url.password !== '' || url.hostname === '') return null;
    return { kind: 'https', uri, url };
  }
  return null;
}
