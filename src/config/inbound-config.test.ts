// The `inbound:` section: defaults, per-domain overrides, and errors that name the key.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkConfig, loadConfig } from './load.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-inbound-config-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
const write = (text: string): string => {
  const file = path.join(dir, `c${n++}.yaml`);
  fs.writeFileSync(file, text);
  return file;
};
const BASE = 'hostname: mx.tern.test\ndomains: [{ name: tern.test }, { name: other.test }]\n';

test('inbound: defaults', () => {
  assert.deepEqual(loadConfig(write(BASE)).inbound, {
    enabled: true,
    authservId: 'mx.tern.test',
    timeout: 30_000,
    spf: { onFail: 'mark' },
    dmarc: { enforce: true },
    trustedForwarders: [],
    domains: {},
  });
});

test('inbound: every key, with per-domain overrides filled in from the section', () => {
  const c = loadConfig(write(`${BASE}inbound:
  enabled: true
  authservId: Auth.Tern.Test.
  timeout: 10s
  spf: { onFail: quarantine }
  dmarc: { enforce: false }
  trustedForwarders: [192.0.2.0/24, "2001:db8::1"]
  domains:
    Tern.Test: { spf: { onFail: reject } }
    other.test: { dmarc: { enforce: true } }
`)).inbound;
  assert.deepEqual(c, {
    enabled: true,
    authservId: 'Auth.Tern.Test',
    timeout: 10_000,
    spf: { onFail: 'quarantine' },
    dmarc: { enforce: false },
    trustedForwarders: ['192.0.2.0/24', '2001:db8::1'],
    domains: {
      'tern.test': { spf: { onFail: 'reject' }, dmarc: { enforce: false } },
      'other.test': { spf: { onFail: 'quarantine' }, dmarc: { enforce: true } },
    },
  });
});

test('inbound: problems name the key and its line', () => {
  const { problems } = checkConfig(write(`${BASE}inbound:
  spf: { onFail: drop }
  trustedForwarders: [192.0.2.0/33, nonsense]
  authservId: "not a name"
  timeout: soon
  domains:
    elsewhere.test: { dmarc: { enforce: true } }
    tern.test: { spf: { onfail: reject } }
  dmarcc: {}
`));
  const at = (p: string) => problems.filter((x) => x.path === p).map((x) => `${x.line}: ${x.message}`);
  assert.match(at('inbound.spf.onFail')[0] ?? '', /^4: must be one of: mark, quarantine, reject/);
  assert.match(at('inbound.trustedForwarders[0]')[0] ?? '', /^5: .*prefix length/);
  assert.match(at('inbound.trustedForwarders[1]')[0] ?? '', /^5: .*not an IP address or CIDR/);
  assert.match(at('inbound.authservId')[0] ?? '', /^6: /);
  assert.match(at('inbound.timeout')[0] ?? '', /^7: invalid duration/);
  assert.match(at('inbound.domains["elsewhere.test"]')[0] ?? '', /^9: elsewhere\.test is not one of the configured domains/);
  assert.match(at('inbound.domains["tern.test"].spf.onfail')[0] ?? '', /^10: unknown key/);
  assert.match(at('inbound.dmarcc')[0] ?? '', /^11: unknown key/);
});
