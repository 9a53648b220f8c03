// Address lists in header fields, RFC 5322 §3.4 (with RFC 6854 groups in
// From:/Sender:, and RFC 6532 UTF-8): the one parser Tern uses to read
// mailboxes out of a message — the submission sender check, the DKIM
// signing domain, and anything later that needs To:/Cc:.
//
//   address-list = address *("," address)
//   address      = mailbox / group
//   mailbox      = name-addr / addr-spec
//   name-addr    = [display-name] angle-addr
//   angle-addr   = [CFWS] "<" addr-spec ">" [CFWS]
//   group        = display-name ":" [group-list] ";" [CFWS]
//   addr-spec    = local-part "@" domain
//
// It is a security check's input, so it reads the value the way a mail
// reader would (comments nest, quoted strings hide specials, a group's
// mailboxes are mailboxes) and fails on anything it cannot read for sure:
// a caller that refuses what does not parse can never check a different
// address than the one a reader shows. The obsolete forms of §4.4 that real
// mail still carries are read: "John Q. Public" (obs-phrase), CFWS around
// dots (obs-local-part, obs-domain), empty list elements (obs-addr-list)
// and source routes (obs-route, ignored like RFC 5321 §C). Encoded words
// (RFC 2047) are atoms to this grammar and stay as written in display names.
//
// Pure and linear in the input: one pass to tokens, one over them, no
// recursion but the one level of a group.

import { quoteLocal } from './address.ts';

/**
 * Octets of originator field values kept per message, all fields together.
 * 64 KiB is some 1,500 mailboxes in From:, far beyond real mail (Postfix's
 * header_size_limit for a whole header section is 100 KiB), and small
 * next to the 256 KiB the DKIM signer and the verifier may hold.
 */
export const MAX_ORIGINATOR_BYTES = 64 * 1024;

export interface HeaderMailbox {
  /** local@domain: the local part quoted only where dot-atom cannot carry it (as in RFC 5321 paths), the domain lower-cased. */
  address: string;
  /** The local part, unquoted (quoted-string content with escapes removed, obs-local-part words joined by "."). */
  local: string;
  /** Lower-cased; a domain literal keeps its brackets. */
  domain: string;
  /** The display name: words joined by one space, quoted strings decoded, encoded words as written; '' when there is none. */
  name: string;
  /** The display name of the group the mailbox is listed in, if any. */
  group?: string | undefined;
}

export type AddressListResult =
  | { ok: true; mailboxes: HeaderMailbox[] }
  | { ok: false; error: string; offset: number };

/** Parse an unfolded field value (what follows "From:"); never throws. */
export function parseAddressList(value: string): AddressListResult {
  try {
    return { ok: true, mailboxes: new ListParser(tokenize(value), value.length).list() };
  } catch (e) {
    if (e instanceof AddressSyntaxError) return { ok: false, error: e.message, offset: e.offset };
    throw e;
  }
}

class AddressSyntaxError extends Error {
  readonly offset: number;
  constructor(message: string, offset: number) {
    super(message);
    this.offset = offset;
  }
}

type Special = '<' | '>' | '@' | ',' | ';' | ':' | '.';
/** One shape for every token (text '' for a special), so the loops over them stay monomorphic. */
interface Token {
  kind: 'atom' | 'quoted' | 'literal' | Special;
  text: string;
  /** Offset in the value, for errors. */
  at: number;
}

/** atext (RFC 5322 §3.2.3) by ASCII code; every non-ASCII character is atext too (RFC 6532 §3.2). */
const ATEXT = new Uint8Array(128);
for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-/=?^_`{|}~") ATEXT[c.charCodeAt(0)] = 1;
const SPECIALS = new Uint8Array(128);
for (const c of '<>@,;:.') SPECIALS[c.charCodeAt(0)] = 1;

function isAtext(c: number): boolean {
  return c >= 0x80 || ATEXT[c] === 1;
}

/** A character for an error message: printable ASCII as itself, anything else by code (errors reach SMTP replies). */
function shown(s: string, i: number): string {
  const c = s.charCodeAt(i);
  return c > 0x20 && c < 0x7f ? `'${s[i]}'` : `U+${c.toString(16).toUpperCase().padStart(4, '0')}`;
}

function tokenize(s: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s.charCodeAt(i);
    // FWS (§3.2.2); CR and LF only appear if the caller did not unfold.
    if (c === 0x20 || c === 0x09 || c === 0x0d || c === 0x0a) {
      i++;
    } else if (c === 0x28) {
      i = skipComment(s, i);
    } else if (c === 0x22) {
      const { text, end } = quotedString(s, i);
      out.push({ kind: 'quoted', text, at: i });
      i = end;
    } else if (c === 0x5b) {
      const { text, end } = domainLiteral(s, i);
      out.push({ kind: 'literal', text, at: i });
      i = end;
    } else if (isAtext(c)) {
      let j = i + 1;
      while (j < s.length && isAtext(s.charCodeAt(j))) j++;
      out.push({ kind: 'atom', text: s.slice(i, j), at: i });
      i = j;
    } else if (c < 0x80 && SPECIALS[c] === 1) {
      out.push({ kind: s[i] as Special, text: '', at: i });
      i++;
    } else {
      // ")", "]", "\" out of place, and control characters.
      throw new AddressSyntaxError(`unexpected ${shown(s, i)}`, i);
    }
  }
  return out;
}

/** comment = "(" *([FWS] ccontent) [FWS] ")", ccontent including nested comments and quoted-pairs (§3.2.2). Returns the index after it. */
function skipComment(s: string, start: number): number {
  let depth = 0;
  for (let i = start; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x5c) i++;
    else if (c === 0x28) depth++;
    else if (c === 0x29 && --depth === 0) return i + 1;
  }
  throw new AddressSyntaxError('unterminated comment', start);
}

/** quoted-string (§3.2.4): the content with quoted-pairs resolved and folding removed. */
function quotedString(s: string, start: number): { text: string; end: number } {
  let text = '';
  let from = start + 1;
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) return { text: text + s.slice(from, i), end: i + 1 };
    if (c === 0x5c) {
      if (i + 1 >= s.length) break;
      text += s.slice(from, i) + s[i + 1];
      from = i + 2;
      i++;
    } else if (c === 0x0d || c === 0x0a) {
      text += s.slice(from, i);
      from = i + 1;
    }
  }
  throw new AddressSyntaxError('unterminated quoted string', start);
}

/** domain-literal = "[" *([FWS] dtext) [FWS] "]" (§3.4.1; quoted-pairs as in obs-dtext), without the folding white space. */
function domainLiteral(s: string, start: number): { text: string; end: number } {
  let text = '[';
  for (let i = start + 1; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x5d) return { text: text + ']', end: i + 1 };
    if (c === 0x5b) break;
    if (c === 0x5c) {
      if (i + 1 >= s.length) break;
      text += s[++i];
    } else if (c !== 0x20 && c !== 0x09 && c !== 0x0d && c !== 0x0a) {
      text += s[i];
    }
  }
  throw new AddressSyntaxError('bad domain literal', start);
}

class ListParser {
  readonly #t: Token[];
  readonly #length: number;
  #i = 0;
  readonly #out: HeaderMailbox[] = [];

  constructor(tokens: Token[], length: number) {
    this.#t = tokens;
    this.#length = length;
  }

  list(): HeaderMailbox[] {
    for (;;) {
      this.#skipCommas();
      if (this.#i >= this.#t.length) return this.#out;
      this.#address(undefined);
      if (this.#i >= this.#t.length) return this.#out;
      this.#expect(',', 'expected "," between addresses');
    }
  }

  #peek(kind: Token['kind']): boolean {
    return this.#t[this.#i]?.kind === kind;
  }

  #fail(message: string): never {
    throw new AddressSyntaxError(message, this.#t[this.#i]?.at ?? this.#length);
  }

  #expect(kind: Special, message: string): void {
    if (!this.#peek(kind)) this.#fail(message);
    this.#i++;
  }

  /** obs-addr-list / obs-mbox-list / obs-group-list: empty elements are allowed (§4.4). */
  #skipCommas(): void {
    while (this.#peek(',')) this.#i++;
  }

  /** address = mailbox / group; what comes after the leading words decides which. */
  #address(group: string | undefined): void {
    const words = this.#words();
    const next = this.#t[this.#i];
    if (next?.kind === '<') {
      this.#angleAddr(displayName(words), group);
    } else if (next?.kind === '@') {
      this.#i++;
      this.#push(localPart(words, next.at), this.#domain(), '', group);
    } else if (next?.kind === ':') {
      if (group !== undefined) this.#fail('a group inside a group');
      const name = displayName(words);
      if (name === '') this.#fail('a group without a name');
      this.#i++;
      this.#groupList(name);
    } else {
      this.#fail(words.length ? 'expected "<", "@" or ":" after a name' : 'expected an address');
    }
  }

  /** group-list up to and including the ";" (an empty group, e.g. "undisclosed-recipients:;", has no mailboxes). */
  #groupList(name: string): void {
    for (;;) {
      this.#skipCommas();
      if (this.#peek(';')) {
        this.#i++;
        return;
      }
      if (this.#i >= this.#t.length) this.#fail('a group not closed with ";"');
      this.#address(name);
      if (!this.#peek(',') && !this.#peek(';')) this.#fail('expected "," or ";" in a group');
    }
  }

  /** angle-addr, with obs-route ("<@a,@b:user@c>") read and ignored. */
  #angleAddr(name: string, group: string | undefined): void {
    this.#i++;
    if (this.#peek('@')) {
      // obs-domain-list = *(CFWS / ",") "@" domain *("," [CFWS] ["@" domain])
      while (this.#peek('@') || this.#peek(',')) {
        if (this.#t[this.#i++]!.kind === '@') this.#domain();
      }
      this.#expect(':', 'expected ":" after a source route');
    }
    const words = this.#words();
    const at = this.#t[this.#i];
    if (at?.kind !== '@') this.#fail(words.length ? 'expected "@" in an address' : 'empty angle brackets');
    this.#i++;
    const local = localPart(words, at.at);
    const domain = this.#domain();
    this.#expect('>', 'expected ">" after an address');
    this.#push(local, domain, name, group);
  }

  /** The words and dots before a special: a display name or a local part, the next token says which. */
  #words(): Token[] {
    const start = this.#i;
    for (let t = this.#t[this.#i]; t && (t.kind === 'atom' || t.kind === 'quoted' || t.kind === '.'); t = this.#t[++this.#i]);
    return this.#t.slice(start, this.#i);
  }

  /** domain = dot-atom / domain-literal / obs-domain (atoms and dots with CFWS between). */
  #domain(): string {
    const first = this.#t[this.#i];
    if (first?.kind === 'literal') {
      this.#i++;
      return first.text.toLowerCase();
    }
    if (first?.kind !== 'atom') this.#fail('expected a domain');
    let domain = first.text;
    this.#i++;
    while (this.#peek('.')) {
      this.#i++;
      const t = this.#t[this.#i];
      if (t?.kind !== 'atom') this.#fail('empty label in a domain');
      domain += '.' + t.text;
      this.#i++;
    }
    return domain.toLowerCase();
  }

  #push(local: string, domain: string, name: string, group: string | undefined): void {
    const m: HeaderMailbox = { address: `${quoteLocal(local)}@${domain}`, local, domain, name };
    if (group !== undefined) m.group = group;
    this.#out.push(m);
  }
}

/** local-part = dot-atom / quoted-string / obs-local-part (word *("." word)): no empty word, no two words side by side. */
function localPart(words: Token[], at: number): string {
  if (words.length === 0) throw new AddressSyntaxError('empty local part', at);
  let local = '';
  for (let i = 0; i < words.length; i++) {
    const t = words[i]!;
    // Words at even positions, dots at odd ones.
    if (t.kind === '.') {
      if (i % 2 === 0) throw new AddressSyntaxError('misplaced "." in a local part', t.at);
      local += '.';
    } else {
      if (i % 2 === 1) throw new AddressSyntaxError('space in a local part', t.at);
      local += t.text;
    }
  }
  if (words.length % 2 === 0) throw new AddressSyntaxError('misplaced "." in a local part', words[words.length - 1]!.at);
  return local;
}

/** display-name = phrase (obs-phrase: a word, then words, dots and CFWS) — '' when there are no words. */
function displayName(words: Token[]): string {
  if (words.length === 0) return '';
  if (words[0]!.kind === '.') throw new AddressSyntaxError('a display name cannot start with "."', words[0]!.at);
  let name = '';
  for (const t of words) name += t.kind === '.' ? '.' : (name ? ' ' : '') + t.text;
  return name;
}
