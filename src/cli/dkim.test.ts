// `tern dkim keygen` for a domain Tern does not serve: a warning on stderr,
// and the key is still made (issue 18): it may be prepared before the domain
// is added to the config.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { writeConfig } from '../../test/helpers/server.ts';
import { loadConfig } from '../config/load.ts';
import { runDkim } from './dkim.ts';

function capture(): { out: { write(s: string): void }; err: { write(s: string): void }; stdout: () => string; stderr: () => string } {
  let o = '';
  let e = '';
  return { out: { write: (s) => void (o += s) }, err: { write: (s) => void (e += s) }, stdout: () => o, stderr: () => e };
}

test('dkim keygen warns for a domain that is not configured, and still makes the key', async () => {
  const { dir, file, dataDir } = writeConfig({ domains: [{ name: 'tern.test', mailboxes: ['alice'] }, { name: 'other.test', mailboxes: ['bob'] }] });
  try {
    const config = loadConfig(file);
    let io = capture();
    assert.equal(await runDkim(config, ['keygen', 'tern.test', '--algo', 'ed25519', '--selector', 's1'], io), 0, io.stderr());
    assert.equal(io.stderr(), '', 'a configured domain: no warning');

    io = capture();
    assert.equal(await runDkim(config, ['keygen', 'Typo.TEST', '--algo', 'ed25519', '--selector', 's1'], io), 0, io.stderr());
    assert.equal(io.stderr(), 'tern dkim keygen: warning: typo.test is not one of the configured domains (tern.test, other.test); the key is made anyway\n');
    assert.match(io.stdout(), /^s1\._domainkey\.typo\.test\. IN TXT "v=DKIM1; k=ed25519; p=/m);
    assert.ok(fs.existsSync(path.join(dataDir, 'dkim', 'typo.test', 's1.key')));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
