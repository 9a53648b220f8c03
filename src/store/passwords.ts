// Password hashing with scrypt (RFC 7914), memory-hard so a stolen tern.db
// is expensive to brute-force. Stored as a PHC string:
//
//   $scrypt$ln=15,r=8,p=1$<salt>$<hash>      (base64 without padding)
//
// ln is log2(N). Parameters live in the string, so they can be raised later
// without invalidating old hashes (see needsRehash). Everything runs in the
// libuv pool (crypto.scrypt's callback form): the event loop never waits.

import crypto from 'node:crypto';

export const SCRYPT_LN = 15;
export const SCRYPT_R = 8;
export const SCRYPT_P = 1;
const SALT_BYTES = 16;
const KEY_BYTES = 32;
/** Bounds for parameters read back from a stored string, so a bad row cannot ask for gigabytes. */
const MAX_LN = 20;
const MAX_R = 32;
const MAX_P = 16;

interface Params {
  ln: number;
  r: number;
  p: number;
}
const CURRENT: Params = { ln: SCRYPT_LN, r: SCRYPT_R, p: SCRYPT_P };

/**
 * The password as hashed: Unicode NFC with non-ASCII spaces mapped to
 * U+0020, after the PRECIS OpaqueString profile (RFC 8265 §4.2), so the same
 * password typed on two keyboards is the same bytes.
 */
export function preparePassword(pw: string): string {
  return pw.replace(/[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]/g, ' ').normalize('NFC');
}

function derive(pw: string, salt: Buffer, { ln, r, p }: Params, keylen: number): Promise<Buffer> {
  const N = 2 ** ln;
  // scrypt needs 128·N·r bytes (plus a little); Node's default cap is 32 MiB.
  const maxmem = 128 * N * r * p + 32 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    crypto.scrypt(preparePassword(pw), salt, keylen, { N, r, p, maxmem }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

const b64 = (b: Buffer): string => b.toString('base64').replace(/=+$/, '');

export async function hashPassword(pw: string): Promise<string> {
  const salt = crypto.randomBytes(SALT_BYTES);
  const key = await derive(pw, salt, CURRENT, KEY_BYTES);
  return `$scrypt$ln=${CURRENT.ln},r=${CURRENT.r},p=${CURRENT.p}$${b64(salt)}$${b64(key)}`;
}

const PHC = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]{11,88})\$([A-Za-z0-9+/]{22,88})$/;

function parse(hash: string): { params: Params; salt: Buffer; key: Buffer } | null {
  const m = PHC.exec(hash);
  if (!m) return null;
  const params = { ln: Number(m[1]), r: Number(m[2]), p: Number(m[3]) };
  if (params.ln < 1 || params.ln > MAX_LN || params.r < 1 || params.r > MAX_R || params.p < 1 || params.p > MAX_P) return null;
  return { params, salt: Buffer.from(m[4]!, 'base64'), key: Buffer.from(m[5]!, 'base64') };
}

/** True when `pw` matches `hash`; a malformed or unsupported hash is false (and still costs a derivation). */
export async function verifyPassword(pw: string, hash: string): Promise<boolean> {
  const h = parse(hash);
  if (!h) return dummyVerify(pw);
  const key = await derive(pw, h.salt, h.params, h.key.length);
  return crypto.timingSafeEqual(key, h.key);
}

/**
 * Costs what a real verify costs and fails: for unknown accounts, so a
 * client cannot tell "no such user" from "wrong password" by the time the
 * reply takes.
 */
export async function dummyVerify(pw: string): Promise<false> {
  const key = await derive(pw, crypto.randomBytes(SALT_BYTES), CURRENT, KEY_BYTES);
  crypto.timingSafeEqual(key, key);
  return false;
}

/** True when `hash` was made with other parameters than today's (rehash after a successful login). */
export function needsRehash(hash: string): boolean {
  const h = parse(hash);
  return !h || h.params.ln !== CURRENT.ln || h.params.r !== CURRENT.r || h.params.p !== CURRENT.p || h.key.length !== KEY_BYTES;
}
