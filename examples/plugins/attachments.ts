// An example Tern plugin with a data stage (docs/plugins.md): a rule for
// attachments, read from the message as it streams in.
//
//   - An executable attachment (.exe, .scr, .js, .vbs, .bat, …, by its file
//     name) refuses the message with 550 5.7.1: the sender learns at once,
//     and nothing reaches a mailbox.
//   - An Office document with macros (.docm, .xlsm, .pptm) is let through to
//     the recipients' Junk folder, where it is not opened by accident.
//   - A message with attachments gets an `X-Attachments:` field naming
//     them, for filters in the mail client.
//
// The body is read with the `body` hook: it returns a function that Tern
// feeds with the message octets as they arrive, so nothing is held but the
// current line and the names found. `data` decides once the message is in.
//
// The MIME structure is followed only as far as this rule needs: the
// boundaries declared in Content-Type fields, and the header section of
// each part (RFC 2046 §5.1.1); file names from `filename=` / `name=`,
// including the RFC 2231 forms (`filename*=utf-8''…`, `filename*0=…`).
//
// Enable it with, in tern.yaml:
//   plugins: [./plugins/attachments.ts]
//
// Only type imports from Tern, so the file works wherever it is copied:
// the error class comes in through the factory's context.

import type { Check, SessionInfo, Transaction } from '../../src/policy/policy.ts';
import type { DataMessage } from '../../src/policy/data.ts';
import type { PluginContext } from '../../src/policy/plugins.ts';

/** Run as soon as they are opened on Windows; never business documents. */
const EXECUTABLE = new Set(['exe', 'scr', 'com', 'pif', 'bat', 'cmd', 'js', 'jse', 'vbs', 'vbe', 'wsf', 'hta', 'msi', 'jar', 'ps1', 'lnk', 'cpl', 'reg']);
/** Office documents that carry macros. */
const MACROS = new Set(['docm', 'dotm', 'xlsm', 'xltm', 'xlam', 'pptm', 'potm', 'ppam']);
/** A longer line is read in part: a header line of a real part is far shorter (RFC 5322 §2.1.1: 998). */
const MAX_LINE = 8 * 1024;
/** Names listed in X-Attachments at most. */
const LISTED = 10;

export default function attachments({ SmtpError, log }: PluginContext): Check {
  // One scanner per message, found again in `data` by its DataMessage.
  const scans = new WeakMap<DataMessage, AttachmentScanner>();
  return {
    name: 'attachments',
    body(_s: SessionInfo, msg: DataMessage) {
      const scan = new AttachmentScanner();
      scans.set(msg, scan);
      return (chunk: Buffer) => scan.push(chunk);
    },
    data(s: SessionInfo, msg: DataMessage, _t: Transaction) {
      const names = scans.get(msg)?.end() ?? [];
      if (names.length === 0) return;
      const executable = names.find((n) => EXECUTABLE.has(extension(n)));
      if (executable) {
        log.info('attachment refused', { conn: s.id, id: msg.id, name: executable });
        throw new SmtpError(550, '5.7.1', `Attachment "${printable(executable)}" refused: executable files are not accepted here`);
      }
      msg.addHeader('X-Attachments', listed(names));
      if (names.some((n) => MACROS.has(extension(n)))) {
        log.info('attachment quarantined', { conn: s.id, id: msg.id, names: names.join(', ') });
        return 'quarantine';
      }
    },
  };
}

/** The file's extension, lower-cased; trailing dots and spaces do not hide it (Windows drops them). */
function extension(name: string): string {
  const base = name.replace(/[. ]+$/, '').toLowerCase();
  const dot = base.lastIndexOf('.');
  return dot < 0 ? '' : base.slice(dot + 1);
}

/** Header and reply text: printable ASCII only. */
function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?').replace(/"/g, "'").slice(0, 100);
}

/** "a.pdf, b.png" — cut to LISTED names and a sane length. */
function listed(names: string[]): string {
  const shown = names.slice(0, LISTED).map(printable).join(', ');
  return names.length > LISTED ? `${shown}, and ${names.length - LISTED} more` : shown;
}

/**
 * Reads a message line by line as it streams past and collects the file
 * names of its parts. Only header sections are parsed: the message's own,
 * and each part's after a boundary line.
 */
export class AttachmentScanner {
  readonly names: string[] = [];
  readonly #boundaries = new Set<string>();
  /** The current line so far (latin1), up to MAX_LINE. */
  #line = '';
  /** In a header section (the message's, or a part's). */
  #inHeader = true;
  /** The header field being read, folded lines joined. */
  #field = '';

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const lf = chunk.indexOf(0x0a, start);
      const end = lf < 0 ? chunk.length : lf;
      if (this.#line.length < MAX_LINE) this.#line += chunk.toString('latin1', start, Math.min(end, start + MAX_LINE - this.#line.length));
      if (lf < 0) return;
      this.#endLine(this.#line.replace(/\r$/, ''));
      this.#line = '';
      start = lf + 1;
    }
  }

  /** The message is complete: the names found. */
  end(): string[] {
    if (this.#line) this.#endLine(this.#line);
    this.#endField();
    return this.names;
  }

  #endLine(line: string): void {
    if (this.#inHeader) {
      if (line.startsWith(' ') || line.startsWith('\t')) {
        this.#field += line;
        return;
      }
      this.#endField();
      if (line === '') this.#inHeader = false;
      else this.#field = line;
      return;
    }
    // RFC 2046 §5.1.1: "--" boundary, optional white space; "--" boundary "--" closes the multipart.
    if (line.startsWith('--')) {
      const b = line.slice(2).replace(/[ \t]+$/, '');
      if (this.#boundaries.has(b)) this.#inHeader = true;
    }
  }

  #endField(): void {
    const field = this.#field;
    this.#field = '';
    const colon = field.indexOf(':');
    if (colon < 0) return;
    const name = field.slice(0, colon).trim().toLowerCase();
    const value = field.slice(colon + 1);
    if (name === 'content-type') {
      const b = param(value, 'boundary');
      if (b) this.#boundaries.add(b);
    }
    if (name === 'content-type' || name === 'content-disposition') {
      const file = param(value, name === 'content-type' ? 'name' : 'filename');
      if (file && !this.names.includes(file)) this.names.push(file);
    }
  }
}

/**
 * A MIME parameter's value (RFC 2045 §5.1), with RFC 2231 continuations
 * (`name*0=`, `name*1=`) and extended values (`name*=utf-8''a%20b.exe`).
 */
export function param(value: string, wanted: string): string | undefined {
  const pieces = new Map<number, string>();
  let plain: string | undefined;
  const re = /;\s*([A-Za-z0-9!#$%&'+.^_`{|}~-]+)(?:\*(\d+))?(\*)?\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;]*))/g;
  for (const m of value.matchAll(re)) {
    if (m[1]!.toLowerCase() !== wanted) continue;
    const raw = m[4] !== undefined ? m[4].replace(/\\(.)/g, '$1') : m[5]!;
    // Raw octets (RFC 6532 allows UTF-8 in header fields) or the %XX of an extended value.
    const v = m[3] ? decodeExtended(raw, m[2] === undefined || m[2] === '0') : Buffer.from(raw, 'latin1').toString('utf8');
    if (m[2] === undefined && !m[3]) plain = v;
    else pieces.set(m[2] === undefined ? 0 : Number(m[2]), v);
  }
  if (pieces.size > 0) return [...pieces.entries()].sort((a, b) => a[0] - b[0]).map(([, v]) => v).join('');
  return plain;
}

/** RFC 2231 §4: [charset'language'] then %XX-encoded octets (the charset only on the first piece). */
function decodeExtended(v: string, first: boolean): string {
  const text = first ? v.replace(/^[^']*'[^']*'/, '') : v;
  const bytes = Buffer.from(text.replace(/%([0-9A-Fa-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1');
  return bytes.toString('utf8');
}
