// API keys: `tern_` and 32 random bytes in base64url, shown once; the store
// keeps only their SHA-256. A password hash (scrypt, as for users) exists to
// slow down guessing of low-entropy secrets; a 256-bit random key cannot be
// guessed however fast the hash, and a fast hash lets every request look its
// key up by an index instead of trying each stored salt.

import { createHash, randomBytes } from 'node:crypto';

export const KEY_PREFIX = 'tern_';
/** 256 bits: beyond any brute force, so an unsalted fast hash is enough. */
const KEY_BYTES = 32;

export function newApiKey(): string {
  return KEY_PREFIX + randomBytes(KEY_BYTES).toString('base64url');
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** A key name: what `tern apikey revoke NAME` and the logs show. */
export function apiKeyNameProblem(name: string): string | undefined {
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name) ? undefined : 'a key name is 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit';
}
