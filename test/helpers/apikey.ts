// An API key made by the real `tern apikey create` code on a config's store; returns the key it prints once.

import assert from 'node:assert/strict';
import { loadConfig } from '../../src/config/load.ts';
import { runApiKey } from '../../src/cli/apikey.ts';

export function createKey(file: string, ...args: string[]): string {
  let out = '';
  const code = runApiKey(loadConfig(file), ['create', ...args], { write: (s: string) => (out += s) }, { write: () => true });
  assert.equal(code, 0);
  return out.trim();
}
