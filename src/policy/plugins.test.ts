import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadPlugins } from './plugins.ts';
import { SmtpError } from '../smtp/reply.ts';
import { defaultConfig } from '../config/defaults.ts';
import { createResolver } from '../dns/resolver.ts';
import type { Logger } from '../util/log.ts';
import type { SessionInfo } from './policy.ts';
import heloChecks from '../../examples/plugins/helo-checks.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-plugins-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
function plugin(source: string, ext = 'ts'): string {
  const file = path.join(dir, `p${n++}.${ext}`);
  fs.writeFileSync(file, source);
  return file;
}

const logged: { level: string; msg: string; fields?: Record<string, unknown> | undefined }[] = [];
const log: Logger = {
  debug: (msg, fields) => logged.push({ level: 'debug', msg, fields }),
  info: (msg, fields) => logged.push({ level: 'info', msg, fields }),
  warn: (msg, fields) => logged.push({ level: 'warn', msg, fields }),
  error: (msg, fields) => logged.push({ level: 'error', msg, fields }),
};
const config = { ...defaultConfig(), hostname: 'mx.tern.test' };
const ctx = { config, log, resolver: createResolver({ servers: ['127.0.0.1:9'], timeout: 100 }) };
const s: SessionInfo = { id: 'c1', remoteAddress: '192.0.2.1', remotePort: 1, localPort: 25, role: 'smtp', tls: false };

describe('loadPlugins', () => {
  it('a Check object and a factory, in order; the factory gets config, log, resolver and SmtpError', async () => {
    const a = plugin(`export default { name: 'a', helo(s, name) { if (name === 'bad') return 'accept'; } };`);
    const b = plugin(`
      export default async function ({ config, log, resolver, SmtpError }) {
        if (typeof resolver.a !== 'function') throw new Error('no resolver');
        log.info('made');
        return { name: 'b', mail() { throw new SmtpError(550, '5.7.1', 'No mail from ' + config.hostname); } };
      }`);
    const checks = await loadPlugins([a, b], ctx);
    assert.deepEqual(checks.map((c) => c.name), ['a', 'b']);
    assert.equal(await checks[0]!.helo!(s, 'bad'), 'accept');
    assert.equal(await checks[0]!.helo!(s, 'good'), undefined);
    assert.equal(checks[0]!.mail, undefined);
    await assert.rejects(async () => checks[1]!.mail!(s, null, { smtputf8: false }), (e: unknown) => e instanceof SmtpError && e.code === 550 && e.text === 'No mail from mx.tern.test');
    assert.ok(logged.some((l) => l.msg === 'made' && l.fields?.plugin === b), 'the plugin log names the file');
  });

  it('a crash or a wrong return value is a logged 451, never a rejection', async () => {
    const p = plugin(`export default { name: 'oops', rcpt() { throw new TypeError('boom'); }, mail() { return 'reject'; } };`);
    const [c] = await loadPlugins([p], ctx);
    for (const call of [() => c!.rcpt!(s, { local: 'a', domain: 'b.test', literal: false, utf8: false }, {}, null), () => c!.mail!(s, null, { smtputf8: false })]) {
      await assert.rejects(async () => call(), (e: unknown) => e instanceof SmtpError && e.code === 451 && e.enhanced === '4.3.0');
    }
    assert.ok(logged.some((l) => l.level === 'error' && l.msg === 'plugin failed' && l.fields?.plugin === 'oops'));
  });

  it('an error shaped like SmtpError from another copy of the class still counts as the verdict', async () => {
    const p = plugin(`export default { name: 'duck', connect() { throw Object.assign(new Error('x'), { code: 554, enhanced: '5.7.1', text: 'Go away' }); } };`);
    const [c] = await loadPlugins([p], ctx);
    await assert.rejects(async () => c!.connect!(s), (e: unknown) => e instanceof SmtpError && e.code === 554 && e.enhanced === '5.7.1' && e.text === 'Go away');
  });

  it('unusable plugins stop the start with the file named', async () => {
    await assert.rejects(loadPlugins([plugin('export default 42;')], ctx), /p\d+\.ts: the default export must be a Check/);
    await assert.rejects(loadPlugins([plugin(`export default { helo() {} };`)], ctx), /needs a non-empty string "name"/);
    await assert.rejects(loadPlugins([plugin(`export default { name: 'x' };`)], ctx), /none of the hooks/);
    await assert.rejects(loadPlugins([plugin(`export default { name: 'x', rcpt: 1 };`)], ctx), /"rcpt" must be a function/);
    await assert.rejects(loadPlugins([plugin('export default {')], ctx), /cannot load/);
    await assert.rejects(loadPlugins([path.join(dir, 'missing.ts')], ctx), /missing\.ts: cannot load/);
  });
});

describe('examples/plugins/helo-checks.ts', () => {
  const check = heloChecks({ ...ctx, SmtpError, config: { ...config, listeners: [{ role: 'smtp', address: '192.0.2.25', port: 25 }] } });
  const refused = (e: unknown): boolean => e instanceof SmtpError && e.code === 550 && e.enhanced === '5.7.1';
  it('refuses a bare IP, our own name, our domains and our address as a literal', () => {
    for (const name of ['192.0.2.1', '2001:db8::1', 'mx.tern.test', 'MX.TERN.TEST.', 'localhost', '[192.0.2.25]']) {
      assert.throws(() => check.helo!(s, name), refused, name);
    }
  });
  it('accepts real names and literals, and leaves submission alone', () => {
    for (const name of ['client.example', '[192.0.2.1]', '[IPv6:2001:db8::1]']) check.helo!(s, name);
    check.helo!({ ...s, role: 'submission' }, '192.0.2.1');
    check.helo!({ ...s, remoteAddress: '192.0.2.25' }, '[192.0.2.25]'); // its own address: true
  });
});
