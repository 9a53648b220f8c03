// Every example config we ship passes `tern config check` as printed:
// examples/**/*.yaml and the complete configs in README.md (the ```yaml
// blocks that start with `hostname:`). Their certificate paths
// (/etc/letsencrypt/...) and data directory (/var/lib/tern) do not exist on
// a test machine, so each config is copied into a temp dir with `tls.cert`,
// `tls.key` and `dataDir` pointed at temp files; every other line is checked
// as written (issue 18).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { parseDocument } from 'yaml';
import { ROOT } from '../helpers/server.ts';
import { makeSelfSigned } from '../../src/server/tls.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-examples-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The YAML files under examples/, relative to the repository. */
function exampleFiles(dir = path.join(ROOT, 'examples')): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return exampleFiles(p);
    return /\.ya?ml$/.test(e.name) ? [path.relative(ROOT, p)] : [];
  });
}

/** The complete configs in README.md: ```yaml blocks whose first key is `hostname`. */
function readmeConfigs(): { name: string; text: string }[] {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const out: { name: string; text: string }[] = [];
  for (const m of readme.matchAll(/^```yaml\n([\s\S]*?)^```$/gm)) {
    if (!/^hostname:/.test(m[1]!)) continue;
    const line = readme.slice(0, m.index).split('\n').length + 1;
    out.push({ name: `README.md:${line}`, text: m[1]! });
  }
  return out;
}

const pair = await makeSelfSigned('mail.example.org');
const configs = [
  ...exampleFiles().map((f) => ({ name: f, text: fs.readFileSync(path.join(ROOT, f), 'utf8') })),
  ...readmeConfigs(),
];

test('finds the example configs', () => {
  // Guards the globbing: a moved file must not make the checks below pass vacuously.
  assert.ok(configs.some((c) => c.name === 'examples/deploy/tern.yaml'), configs.map((c) => c.name).join(', '));
  assert.ok(configs.some((c) => c.name.startsWith('README.md:')), 'no complete config (a ```yaml block starting with hostname:) in README.md');
});

for (const [i, c] of configs.entries()) {
  test(`${c.name} passes tern config check`, { timeout: 60_000 }, () => {
    const dir = path.join(tmp, String(i));
    fs.mkdirSync(dir);
    const doc = parseDocument(c.text);
    assert.deepEqual(doc.errors, [], `${c.name} is not valid YAML`);
    // Only what cannot exist here is rewritten: the certificate pair and the data directory.
    if (doc.hasIn(['tls', 'cert']) || doc.hasIn(['tls', 'key'])) {
      fs.writeFileSync(path.join(dir, 'cert.pem'), pair.cert);
      fs.writeFileSync(path.join(dir, 'key.pem'), pair.key, { mode: 0o600 });
      doc.setIn(['tls', 'cert'], path.join(dir, 'cert.pem'));
      doc.setIn(['tls', 'key'], path.join(dir, 'key.pem'));
    }
    if (doc.has('dataDir')) doc.set('dataDir', path.join(dir, 'data'));
    const file = path.join(dir, 'tern.yaml');
    fs.writeFileSync(file, doc.toString());
    const r = spawnSync(process.execPath, [path.join(ROOT, 'src/cli/main.ts'), 'config', 'check', file], { encoding: 'utf8', cwd: dir });
    assert.equal(r.status, 0, `${c.name}: ${r.stdout}${r.stderr}`);
    assert.equal(r.stdout.trim(), `${file}: OK`);
  });
}
