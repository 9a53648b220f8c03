// The server as a user runs it: `tern serve --config`, SIGTERM, restart,
// the self-signed certificate kept, and `tern config check`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ROOT, RawClient, spawnServer, writeConfig } from '../helpers/server.ts';

test('SIGTERM: idle sessions get 421, the process exits 0; restart reuses the certificate', { timeout: 60_000 }, async () => {
  const { file, dataDir, dir } = writeConfig();
  try {
    const a = await spawnServer(file);
    // tern serve replaced itself (same PID, the one we signal) with Node run with its V8 flags.
    const argv = fs.readFileSync(`/proc/${a.child.pid}/cmdline`, 'utf8').split('\0');
    assert.ok(argv.includes('--max-semi-space-size=4'), argv.join(' '));
    const certFile = path.join(dataDir, 'tls', 'selfsigned.crt');
    const cert = fs.readFileSync(certFile, 'utf8');
    const c = await RawClient.connect(a.ports.smtp!);
    assert.match(await c.reply(), /^220 mx\.tern\.test /);
    assert.match(await c.cmd('EHLO me.test'), /^250-mx\.tern\.test/);
    const exited = new Promise<number | null>((r) => a.child.once('exit', (code) => r(code)));
    a.child.kill('SIGTERM');
    assert.match(await c.reply(), /^421 4\.3\.2 /);
    await c.waitClosed();
    assert.equal(await exited, 0);
    const stopLine = a.log.find((l) => l.includes('"tern stopped"'));
    assert.ok(stopLine, 'logged a clean stop');
    assert.deepEqual(JSON.parse(stopLine).journal, { batches: 0, records: 0 }, 'journal stats in the stop line');

    const b = await spawnServer(file);
    assert.equal(fs.readFileSync(certFile, 'utf8'), cert, 'the self-signed certificate is made once and reused');
    const tlsClient = await RawClient.connectTls(b.ports.submissions!);
    assert.match(await tlsClient.reply(), /^220 /);
    tlsClient.close();
    b.child.kill('SIGTERM');
    await new Promise((r) => b.child.once('exit', r));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('tern config check: OK for a good file, every problem with its line for a bad one', () => {
  const { file, dir } = writeConfig();
  try {
    const ok = spawnSync(process.execPath, [path.join(ROOT, 'bin/tern.js'), 'config', 'check', file], { encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /OK/);
    const bad = path.join(dir, 'bad.yaml');
    fs.writeFileSync(bad, 'hostname: mx.tern.test\nlistenres: []\nlimits:\n  messageSize: lots\n');
    const r = spawnSync(process.execPath, [path.join(ROOT, 'bin/tern.js'), 'config', 'check', bad], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /bad\.yaml:2: listenres: unknown key/);
    assert.match(r.stderr, /bad\.yaml:4: limits\.messageSize: /);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a client that sends everything and half-closes still gets every reply, and the message is queued', async () => {
  const { startServer, mailbox: box, waitFor } = await import('../helpers/server.ts');
  const net = await import('node:net');
  const srv = await startServer();
  try {
    const out = await new Promise<string>((resolve) => {
      let buf = '';
      const s = net.connect(srv.port('smtp'), '127.0.0.1', () =>
        s.end('EHLO x.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<alice@tern.test>\r\nDATA\r\nSubject: half\r\n\r\nhi\r\n.\r\nQUIT\r\n'),
      );
      s.setEncoding('latin1');
      s.on('data', (d: string) => (buf += d));
      s.on('close', () => resolve(buf));
    });
    assert.match(out, /^250 2\.0\.0 OK queued as \w+\r\n221 2\.0\.0 /m);
    await waitFor(() => box(srv.dataDir, 'tern.test', 'alice').length === 1, 5000, 'delivery');
  } finally {
    await srv.stop();
  }
});
