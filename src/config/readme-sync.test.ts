// README.md's configuration tables and the declaration (schema.ts) must
// agree: every declared key has a row showing its default, and every row
// names a declared key. The README is what operators read; this keeps it
// from drifting when a key is added or a default changes.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { keyPaths, type Key } from './declare.ts';
import { CONFIG } from './schema.ts';

const README = new URL('../../README.md', import.meta.url);

/**
 * Declared keys README has no row for yet, each with the reason. Empty:
 * a key is documented when it is declared.
 */
const EXPECTED_MISSING: readonly string[] = [];

interface Row { key: string; shown: string; line: number }

/** The rows of every `| key | default | meaning |` table; a row naming several keys (`a.b`, `.c`) gives one row each. */
function readmeRows(text: string): Row[] {
  const rows: Row[] = [];
  let inTable = false;
  text.split('\n').forEach((line, i) => {
    if (/^\|\s*key\s*\|\s*default\s*\|/.test(line)) return void (inTable = true);
    if (!line.startsWith('|')) return void (inTable = false);
    if (!inTable || /^\|\s*-/.test(line)) return;
    const [keys = '', shown = ''] = line.split('|').slice(1).map((c) => c.trim());
    let first = '';
    for (const m of keys.matchAll(/`([^`]+)`/g)) {
      // `.port` after `outbound.smarthost.host` is `outbound.smarthost.port`.
      const key = m[1]!.startsWith('.') ? first.replace(/\.[^.]+$/, m[1]!) : m[1]!;
      first ||= key;
      rows.push({ key: normalizeKey(key), shown: normalizeDefault(shown), line: i + 1 });
    }
  });
  return rows;
}

/** `listeners[]` and `listeners` name the same key. */
const normalizeKey = (k: string): string => k.replace(/\[\]$/, '');
/** The default without formatting or a trailing remark: "`0` (no limit)" shows 0. */
const normalizeDefault = (s: string): string => s.replace(/`/g, '').replace(/\s*\([^()]*\)$/, '').trim();

/** Keys that need a row: values, lists and maps; a section is documented by its keys. */
function declaredKeys(): Map<string, Key<unknown>> {
  return new Map(keyPaths(CONFIG).filter(({ key }) => key.kind !== 'section').map(({ path, key }) => [normalizeKey(path), key]));
}

describe('README configuration tables and the declaration agree', () => {
  const rows = readmeRows(fs.readFileSync(README, 'utf8'));
  const declared = declaredKeys();
  const declaredPaths = new Set(keyPaths(CONFIG).map(({ path }) => normalizeKey(path)));

  it('finds the tables and the keys', () => {
    // Guards the parsers: a format change that matched nothing would make the checks below pass vacuously.
    assert.ok(rows.length >= 70, `only ${rows.length} rows found in README.md's key tables`);
    assert.ok(declared.size >= 80, `only ${declared.size} keys declared`);
    assert.ok(declared.has('limits.timeouts.evictAfter') && declared.has('listeners[].proxyProtocol') && declared.has('inbound.domains.<domain>'));
  });

  it('every declared key has a row in README.md', () => {
    const documented = new Set(rows.map((r) => r.key));
    const missing = [...declared].filter(([k]) => !documented.has(k) && !EXPECTED_MISSING.includes(k));
    assert.deepEqual(missing.map(([k, key]) => `| \`${k}\` | ${key.shown} | … |`), [], 'README.md lacks rows for these declared keys (default as declared)');
  });

  it('every row names a declared key, once', () => {
    assert.deepEqual(rows.filter((r) => !declaredPaths.has(r.key)).map((r) => `README.md:${r.line}: ${r.key}`), [], 'README.md documents keys that are not declared');
    const seen = new Map<string, number>();
    const twice = rows.flatMap((r) => (seen.has(r.key) ? [`README.md:${r.line}: ${r.key} (also line ${seen.get(r.key)})`] : (seen.set(r.key, r.line), [])));
    assert.deepEqual(twice, []);
  });

  it('every row shows the declared default', () => {
    const wrong = rows.flatMap((r) => {
      const key = declared.get(r.key);
      return key === undefined || key.shown === r.shown ? [] : [`README.md:${r.line}: ${r.key}: README shows "${r.shown}", declared "${key.shown}"`];
    });
    assert.deepEqual(wrong, []);
  });

  it('EXPECTED_MISSING names only declared keys that README still lacks', () => {
    const documented = new Set(rows.map((r) => r.key));
    assert.deepEqual(EXPECTED_MISSING.filter((k) => !declared.has(k) || documented.has(k)), []);
  });
});
