// DKIM signing of our users' outgoing mail (RFC 6376; ed25519-sha256 per
// RFC 8463). Keys live in <dataDir>/dkim/<domain>/<selector>.key (PKCS#8
// PEM, 0600) with <selector>.json beside it ({ algorithm, createdAt }); every
// key of a domain signs, so an rsa and an ed25519 key give two signatures
// and receivers that do not know ed25519 yet still find the rsa one.
//
// The signature itself is mailauth's (relaxed/relaxed, t= set, no x=). It
// is fed the message as it streams into the spool: mailauth keeps the
// header section (intake already bounds it) and hashes the body as it
// goes, so a large message is never held in memory.

import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { promisify } from 'node:util';
import { createRequire } from 'node:module';
import { domainToASCII } from 'node:url';
import type { Writable } from 'node:stream';

export interface DkimKey {
  domain: string;
  selector: string;
  algorithm: 'rsa-sha256' | 'ed25519-sha256';
  /** PKCS#8 PEM. */
  privateKey: string;
}

/**
 * Header fields signed, every instance present (RFC 6376 §5.4.1). The list
 * follows rspamd's default: what a reader sees or what changes meaning.
 */
export const SIGNED_HEADERS: string[] = [
  'from', 'sender', 'reply-to', 'subject', 'date', 'message-id', 'to', 'cc',
  'mime-version', 'content-type', 'content-transfer-encoding',
  'resent-to', 'resent-cc', 'resent-from', 'resent-sender', 'resent-date', 'resent-message-id',
  'in-reply-to', 'references',
  'list-id', 'list-help', 'list-owner', 'list-unsubscribe', 'list-unsubscribe-post', 'list-subscribe', 'list-post', 'list-archive',
  'bimi-selector', 'autocrypt', 'openpgp',
];

/**
 * Over-signing (RFC 6376 §8.15, §5.4.2): a name listed in h= once more than
 * the field is present makes adding another instance break the signature.
 * These are always listed once more, even when absent (nobody may add a
 * second From, or a Reply-To to mail that had none).
 */
export const OVERSIGN_ALWAYS: string[] = ['from', 'reply-to', 'subject', 'to', 'cc'];
/** Listed once more only when present: a mailing list may still add a missing one. */
export const OVERSIGN_IF_PRESENT: string[] = [
  'sender', 'date', 'message-id', 'mime-version', 'content-type', 'content-transfer-encoding',
  'in-reply-to', 'references', 'list-unsubscribe', 'list-unsubscribe-post',
];

/** RSA size for new keys: RFC 8301 §3.2 asks for at least 2048 bits when signing. */
export const RSA_BITS = 2048;
/**
 * A directory changed this recently is re-read on every call: two changes
 * within one tick of the file system's clock leave the same mtime.
 */
const FRESH_MS = 2000;
/** How long a domain's keys are used before its directory is looked at again. */
export const RECHECK_MS = 1000;
/** Domains whose keys (or their absence) are remembered at once. */
const CACHED_DOMAINS_MAX = 10_000;

// ---------------------------------------------------------------- keys

/** The domain as its A-label form, lower case; null when it is not a plain host name (never a path). */
export function normalizeDomain(domain: string): string | null {
  const d = domainToASCII(domain.trim().replace(/\.$/, '')).toLowerCase();
  return /^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$/.test(d) && d.length <= 253 ? d : null;
}

/** RFC 6376 §3.1: a selector is one or more sub-domain labels. */
export function validSelector(s: string): boolean {
  return /^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$/.test(s);
}

/** Where signing keys come from: the files of this node (DkimKeys), or a shared store (src/intake/dkim-store.ts). */
export interface DkimKeySource {
  /** Every key of the domain (lower-case A-label form). Called per signed message: must be cheap. */
  forDomain(domain: string): DkimKey[];
  /** Every key of every domain, for `tern dkim list` and `tern dns`. */
  all(): DkimKey[];
}

export class DkimKeys implements DkimKeySource {
  readonly #root: string;
  readonly #now: () => number;
  /** Per domain: when its directory was last looked at, its mtime then (-1: no directory), and its keys. */
  readonly #cache = new Map<string, { checkedAt: number; mtimeMs: number; keys: DkimKey[] }>();

  constructor(dataDir: string, now: () => number = Date.now) {
    this.#root = path.join(dataDir, 'dkim');
    this.#now = now;
  }

  /**
   * Every key of the domain. The directory is looked at (one stat) at most
   * once every RECHECK_MS, not for every message, and re-read only when its
   * mtime changed: a key added by `tern dkim keygen` (a rename into the
   * directory) signs mail within a second, without a restart.
   */
  forDomain(domain: string): DkimKey[] {
    const d = normalizeDomain(domain);
    if (!d) return [];
    const now = this.#now();
    const hit = this.#cache.get(d);
    if (hit && now - hit.checkedAt < RECHECK_MS && now >= hit.checkedAt) return hit.keys;
    const st = fs.statSync(path.join(this.#root, d), { throwIfNoEntry: false });
    const mtimeMs = st ? st.mtimeMs : -1;
    // FRESH_MS is longer than RECHECK_MS: a second change within the clock tick of the first is read at the next look.
    const keys = hit && hit.mtimeMs === mtimeMs && (!st || now - mtimeMs > FRESH_MS) ? hit.keys : st ? readKeys(path.join(this.#root, d), d) : [];
    // Bounded: the domains come from the From fields of submitted mail.
    if (!hit && this.#cache.size >= CACHED_DOMAINS_MAX) this.#cache.clear();
    this.#cache.set(d, { checkedAt: now, mtimeMs, keys });
    return keys;
  }

  /** Every key of every domain, for `tern dkim list`. */
  all(): DkimKey[] {
    const domains = fs.existsSync(this.#root) ? fs.readdirSync(this.#root).sort() : [];
    return domains.flatMap((d) => (normalizeDomain(d) === d ? this.forDomain(d) : []));
  }
}

/** Keys are the *.key files (a .json without its key is ignored); the algorithm comes from the key itself. */
function readKeys(dir: string, domain: string): DkimKey[] {
  const keys: DkimKey[] = [];
  for (const name of fs.readdirSync(dir).sort()) {
    const selector = name.slice(0, -'.key'.length);
    if (!name.endsWith('.key') || !validSelector(selector)) continue;
    try {
      const privateKey = fs.readFileSync(path.join(dir, name), 'utf8');
      const type = crypto.createPrivateKey(privateKey).asymmetricKeyType;
      if (type === 'rsa' || type === 'ed25519') keys.push({ domain, selector, algorithm: `${type}-sha256`, privateKey });
    } catch {
      // Unreadable or not a key: not used for signing; `tern dkim list` does not show it either.
    }
  }
  return keys;
}

/** The DNS TXT value to publish at <selector>._domainkey.<domain> (RFC 6376 §3.6.1). */
export function dnsRecordFor(key: DkimKey): string {
  const pub = crypto.createPublicKey(key.privateKey);
  if (key.algorithm === 'ed25519-sha256') {
    // RFC 8463 §4.2: p= is the raw 32-byte public key, not a SubjectPublicKeyInfo.
    const x = pub.export({ format: 'jwk' }).x!;
    return `v=DKIM1; k=ed25519; p=${Buffer.from(x, 'base64url').toString('base64')}`;
  }
  // SubjectPublicKeyInfo DER, what every verifier accepts for k=rsa.
  return `v=DKIM1; k=rsa; p=${pub.export({ type: 'spki', format: 'der' }).toString('base64')}`;
}

export function dnsNameFor(key: DkimKey): string {
  return `${key.selector}._domainkey.${key.domain}`;
}

/** A zone file line; RFC 1035 §3.3: one character-string is at most 255 octets, so longer values are split. */
export function zoneLineFor(key: DkimKey): string {
  const value = dnsRecordFor(key);
  const parts: string[] = [];
  for (let i = 0; i < value.length; i += 255) parts.push(`"${value.slice(i, i + 255)}"`);
  return `${dnsNameFor(key)}. IN TXT ${parts.join(' ')}`;
}

/** Default selectors are dated (rotation) and name the algorithm, so an rsa and an ed25519 key never collide. */
export function defaultSelector(algorithm: 'rsa' | 'ed25519', now = new Date()): string {
  const ym = `${now.getUTCFullYear()}${String(now.getUTCMonth() + 1).padStart(2, '0')}`;
  return `${algorithm === 'rsa' ? 'rsa' : 'ed'}-${ym}`;
}

export class DkimKeyExistsError extends Error {}

const generateKeyPair = promisify(crypto.generateKeyPair);

/**
 * Make and store a new key. Never replaces an existing key of the same
 * selector (DkimKeyExistsError): the key file is published with link(2),
 * which fails rather than overwrites.
 */
export async function generateKey(
  dataDir: string,
  domain: string,
  opts: { selector?: string | undefined; algorithm?: 'rsa' | 'ed25519' | undefined } = {},
): Promise<{ key: DkimKey; dnsName: string; dnsRecord: string; zoneLine: string }> {
  const d = normalizeDomain(domain);
  if (!d) throw new Error(`not a domain name: ${domain}`);
  const algo = opts.algorithm ?? 'rsa';
  const selector = (opts.selector ?? defaultSelector(algo)).toLowerCase();
  if (!validSelector(selector)) throw new Error(`not a valid selector: ${opts.selector}`);
  const dir = path.join(dataDir, 'dkim', d);
  const keyFile = path.join(dir, `${selector}.key`);
  const exists = () => new DkimKeyExistsError(`${d} already has a key with selector ${selector} (${keyFile}); choose another --selector`);
  if (fs.existsSync(keyFile)) throw exists();

  const key = await newKey(d, selector, algo);

  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  // The metadata first, so that a key is never seen without it.
  const meta = JSON.stringify({ algorithm: key.algorithm, createdAt: new Date().toISOString() }) + '\n';
  const metaTmp = writeTemp(dir, selector, meta);
  fs.renameSync(metaTmp, path.join(dir, `${selector}.json`));
  const keyTmp = writeTemp(dir, selector, key.privateKey);
  try {
    fs.linkSync(keyTmp, keyFile);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw exists();
    throw e;
  } finally {
    fs.rmSync(keyTmp, { force: true });
  }
  fsyncDir(dir);
  return { key, dnsName: dnsNameFor(key), dnsRecord: dnsRecordFor(key), zoneLine: zoneLineFor(key) };
}

/** A new key pair for `domain` (already normalized) and `selector` (already checked). */
export async function newKey(domain: string, selector: string, algo: 'rsa' | 'ed25519'): Promise<DkimKey> {
  const pair = algo === 'rsa' ? await generateKeyPair('rsa', { modulusLength: RSA_BITS }) : await generateKeyPair('ed25519');
  const privateKey = pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  return { domain, selector, algorithm: `${algo}-sha256`, privateKey };
}

function writeTemp(dir: string, selector: string, data: string): string {
  const tmp = path.join(dir, `.${selector}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`);
  const fd = fs.openSync(tmp, 'wx', 0o600);
  try {
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return tmp;
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------- signing

interface ParsedHeader {
  key: string | null;
  casedKey: string | undefined;
  line: Buffer;
}
/** The parts of mailauth's DkimSigner (lib/dkim/dkim-signer.js, a Writable) used here; it has no type declarations. */
interface MailauthSigner extends Writable {
  signatureHeaders: string[];
  errors: { err: Error; selector?: string; signingDomain?: string }[];
  messageHeaders(headers: { parsed: ParsedHeader[] }): Promise<void>;
}
const requireCjs = createRequire(import.meta.url);

/** Keys parsed at most, before the cache starts over (a node signs for a few domains; rotation adds a few more). */
const PARSED_KEYS_MAX = 256;

/**
 * mailauth's signer takes keys as PEM only, and parses the PEM again for
 * every message (lib/tools.js getPrivateKey, crypto.createPrivateKey). A
 * fresh KeyObject also loses what OpenSSL precomputes on a key's first use:
 * measured here, an RSA-2048 signature with a new KeyObject from PEM costs
 * 570 µs of CPU, with one kept 270 µs, and the parse itself 50 µs. So
 * getPrivateKey is wrapped, once per process, with a cache keyed by the PEM
 * text: the same text always parses to the same immutable key, so nothing
 * signed changes. dkim-signer.js takes the function when it loads, so it is
 * loaded (again, if mailauth's ARC code loaded it first) after the wrap.
 * Should a mailauth release rename the function, signing goes on as before,
 * uncached (dkim.test.ts notices).
 */
function loadSigner(): new (options: object) => MailauthSigner {
  const tools = requireCjs('mailauth/lib/tools.js') as { getPrivateKey?: ((key: unknown) => crypto.KeyObject) & { cached?: true } };
  const parse = tools.getPrivateKey;
  if (typeof parse === 'function' && parse.cached !== true) {
    const parsed = new Map<string, crypto.KeyObject>();
    const cached = (key: unknown): crypto.KeyObject => {
      if (typeof key !== 'string') return parse(key);
      let k = parsed.get(key);
      if (k === undefined) {
        k = parse(key);
        if (parsed.size >= PARSED_KEYS_MAX) parsed.clear();
        parsed.set(key, k);
      }
      return k;
    };
    cached.cached = true as const;
    tools.getPrivateKey = cached;
    delete requireCjs.cache[requireCjs.resolve('mailauth/lib/dkim/dkim-signer.js')];
  }
  return (requireCjs('mailauth/lib/dkim/dkim-signer.js') as { DkimSigner: new (options: object) => MailauthSigner }).DkimSigner;
}

const MailauthDkimSigner = loadSigner();

/**
 * mailauth builds h= from the fields present only, so it cannot over-sign
 * by itself. Its h= is the signed fields' names joined with ": ", and the
 * last one signed is the topmost field in the list; extra names appended to
 * that field's name land at the end of h= and add nothing to the hash —
 * exactly how a verifier treats a name with no field left (RFC 6376 §5.4.2).
 * The test suite checks the result with an independent verifier.
 */
class OversigningSigner extends MailauthDkimSigner {
  override async messageHeaders(headers: { parsed: ParsedHeader[] }): Promise<void> {
    await super.messageHeaders(headers);
    const present = new Map<string, number>();
    let topmost: ParsedHeader | undefined;
    for (const h of headers.parsed) {
      if (!h.key || !SIGNED_HEADERS.includes(h.key)) continue;
      topmost ??= h;
      present.set(h.key, (present.get(h.key) ?? 0) + 1);
    }
    if (!topmost) return; // nothing to sign: mailauth reports the missing From
    const extra = [...OVERSIGN_ALWAYS, ...OVERSIGN_IF_PRESENT.filter((n) => present.has(n))];
    topmost.casedKey = [topmost.casedKey, ...extra].join(': ');
  }
}

/**
 * Streaming signer: write() the exact bytes that follow the signature as
 * delivered, then finish() for the DKIM-Signature fields to prepend.
 * Signing problems never throw: finish() then returns what could be signed
 * (possibly '') and `errors` says why, for the caller to log.
 */
export class DkimSigner {
  readonly errors: string[] = [];
  readonly #signer: MailauthSigner;
  readonly #done: Promise<void>;
  #failed = false;

  constructor(keys: DkimKey[]) {
    this.#signer = new OversigningSigner({
      canonicalization: 'relaxed/relaxed',
      headerList: SIGNED_HEADERS,
      // No signTime: t= is the time of signing. No expires: no x= (RFC 6376 §3.5 makes both optional).
      signatureData: keys.map((k) => ({ signingDomain: k.domain, selector: k.selector, privateKey: k.privateKey, algorithm: k.algorithm })),
    });
    this.#done = new Promise<void>((resolve) => {
      this.#signer.once('finish', resolve);
      this.#signer.once('error', (e: Error) => {
        this.#failed = true;
        this.errors.push(e.message);
        resolve();
      });
    });
  }

  /**
   * Hashing is synchronous under mailauth's async wrappers, so the stream's
   * buffer empties within the same turn of the event loop: no backpressure
   * is needed to keep memory bounded.
   */
  write(chunk: Buffer): void {
    if (!this.#failed) this.#signer.write(chunk);
  }

  /** One CRLF-terminated DKIM-Signature field per key that could sign. */
  async finish(): Promise<string> {
    if (!this.#failed) this.#signer.end();
    await this.#done;
    for (const e of this.#signer.errors ?? []) this.errors.push(`${e.signingDomain ?? ''}/${e.selector ?? ''}: ${e.err.message}`);
    if (this.#failed) return '';
    const sigs = this.#signer.signatureHeaders;
    return sigs.length ? sigs.join('\r\n') + '\r\n' : '';
  }
}
