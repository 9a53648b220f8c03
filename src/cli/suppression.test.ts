// `tern suppression …` through the real bin, on the store on disk; and a
// running list (the server's cache) seeing the change from the other process.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ROOT, writeConfig } from '../../test/helpers/server.ts';
import { openStore } from '../store/store.ts';
import { SuppressionList } from '../suppress/list.ts';
import { silentLogger } from '../util/log.ts';

const { dir, file, dataDir } = writeConfig();
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function tern(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin/tern.js'), 'suppression', ...args, '--config', file], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('tern suppression add, list (text and JSON), del; a running list sees each change; bad input is refused', async () => {
  const store = openStore(dataDir);
  const list = new SuppressionList(store.suppressions, { log: silentLogger });
  try {
    assert.equal(list.lookup('bob@example.org'), null);
    let r = tern('add', 'Bob@Example.org', '--reason', 'asked us to stop');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'bob@example.org: suppressed\n');
    // Another add without a reason keeps the first one's.
    r = tern('add', 'bob@example.org');
    assert.equal(r.stdout, 'bob@example.org: already on the list (cli: asked us to stop)\n');
    r = tern('list');
    assert.match(r.stdout, /^bob@example\.org\tcli\t\d{4}-\d\d-\d\dT[^\t]+\tasked us to stop\n1 suppressed\n$/);
    const json = JSON.parse(tern('list', '--json').stdout) as { address: string; source: string; reason: string }[];
    assert.deepEqual(json.map((e) => [e.address, e.source, e.reason]), [['bob@example.org', 'cli', 'asked us to stop']]);
    // The server's cache notices another process's change (it checks at most once a second).
    await waitUntil(() => list.lookup('BOB@example.org')?.reason === 'asked us to stop');
    r = tern('del', 'bob@example.org');
    assert.equal(r.status, 0, r.stderr);
    await waitUntil(() => list.lookup('bob@example.org') === null);
    assert.equal(tern('del', 'bob@example.org').status, 1);
    assert.match(tern('add', 'not-an-address').stderr, /not an address/);
    assert.equal(tern('add', 'x@example.org', '--reason', 'a\nb').status, 2);
    assert.equal(tern('frob').status, 2);
    assert.equal(tern('list', 'extra').status, 2);
  } finally {
    list.close();
    store.close();
  }
});

async function waitUntil(ok: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error('not seen within 5 s');
    await new Promise((r) => setTimeout(r, 50));
  }
}
