// The declaration (schema.ts) and what is derived from it: the file's JSON
// schema, the resolved types, defaults that read other keys.

import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkConfig } from './load.ts';
import { CONFIG, LISTENER_ROLES } from './schema.ts';
import type { ConfigUser, DomainConfig, InboundDomainPolicy, ListenerConfig, SmarthostConfig, TernConfig } from './types.ts';

// The inferred types keep the shapes the rest of Tern was written against;
// a change here fails the type check (npm test runs tsc first).
type Equal<A, B> = (<G>() => G extends A ? 1 : 2) extends (<G>() => G extends B ? 1 : 2) ? true : false;
const same = <A, B>(ok: Equal<A, B>): Equal<A, B> => ok;
same<ListenerConfig, { role: 'smtp' | 'submission' | 'submissions' | 'http'; address: string; port: number; proxyProtocol?: boolean | undefined; tls?: boolean | undefined }>(true);
same<DomainConfig['mailboxes'], string[] | '*'>(true);
same<DomainConfig['aliases'], { [name: string]: string[] }>(true);
same<DomainConfig['delivery'], 'maildir' | 'discard' | `lmtp:${string}` | undefined>(true);
same<TernConfig['tls'], { cert: string; key: string } | undefined>(true);
same<TernConfig['queue']['retrySchedule'], number[]>(true);
same<SmarthostConfig['auth'], { user: string; password: string } | undefined>(true);
same<ConfigUser['messagesPerHour'], number | undefined>(true);
same<InboundDomainPolicy, { spf: { onFail: 'mark' | 'quarantine' | 'reject' }; dmarc: { enforce: boolean } }>(true);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-declare-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
const check = (text: string) => {
  const file = path.join(dir, `c${n++}.yaml`);
  fs.writeFileSync(file, text);
  return checkConfig(file);
};

describe('the declaration', () => {
  it('closes every mapping with named keys, so a misspelt key is an error', () => {
    const open: string[] = [];
    const walk = (s: Record<string, unknown>, at: string): void => {
      if (s.properties !== undefined && s.additionalProperties !== false) open.push(at);
      for (const [k, v] of Object.entries((s.properties ?? {}) as Record<string, Record<string, unknown>>)) walk(v, `${at}.${k}`);
      for (const sub of [s.items, s.additionalProperties]) if (typeof sub === 'object' && sub !== null) walk(sub as Record<string, unknown>, `${at}[]`);
    };
    walk(CONFIG.schema, '');
    assert.deepEqual(open, []);
  });

  it('names each word list once: the schema uses the exported list', () => {
    const listeners = (CONFIG.schema.properties as Record<string, { items: { properties: { role: { enum: unknown } } } }>).listeners;
    assert.equal(listeners.items.properties.role.enum, LISTENER_ROLES);
  });

  it('defaults that read another key follow it', () => {
    const { config, problems } = check('hostname: Mx.Tern.Test.\noutbound: { smarthost: { host: relay.test, tls: implicit } }\n');
    assert.deepEqual(problems, []);
    assert.equal(config!.outbound.heloName, 'Mx.Tern.Test');
    assert.equal(config!.inbound.authservId, 'Mx.Tern.Test');
    assert.deepEqual(config!.domains.map((d) => d.name), ['localhost', 'mx.tern.test']);
    assert.equal(config!.outbound.smarthost!.port, 465, 'implicit TLS: port 465');
  });

  it('a value of the wrong type is reported once: it takes the default, unchecked', () => {
    const { problems } = check('limits: { timeouts: { greeting: [1] } }\nplugins: [""]\nedge: { greylist: { delay: {} } }\n');
    assert.deepEqual(problems.map((p) => [p.line, p.path, p.message]), [
      [1, 'limits.timeouts.greeting', 'must be a string or a number, not a list'],
      [2, 'plugins[0]', 'must not be empty'],
      [3, 'edge.greylist.delay', 'must be a string or a number, not a mapping'],
    ]);
  });
});
