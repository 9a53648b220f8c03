// LMTP delivery (RFC 2033) to a real Dovecot: a private instance started
// here (its own config, ports and directories; Debian's dovecot-core and
// dovecot-lmtpd), one domain reached over TCP and one over its unix socket.
// Tern takes a message over SMTP for an existing and an unknown user of an
// LMTP domain: the existing one lands in Dovecot's Maildir, the unknown one
// bounces with Dovecot's own 550 5.1.1 in a DSN to the sender — one result
// per recipient from LMTP's replies after the message.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { freePort, startServer, waitFor, type TestServer } from '../helpers/server.ts';
import { DOVECOT, requireDovecot } from '../helpers/tools.ts';
import { expectMailbox, open, sendMail, waitQueueEmpty } from './smtp-kit.ts';

const skip = requireDovecot();

/** Mail files are owned by this user (Dovecot will not deliver as root). */
const MAIL_UID = 65534;

interface Dovecot {
  dir: string;
  port: number;
  socket: string;
  child: ChildProcess;
  /** Messages in a user's Maildir/new. */
  inbox(user: string): string[];
  log(): string;
}

async function startDovecot(): Promise<Dovecot> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-dovecot-'));
  fs.chmodSync(dir, 0o755);
  for (const d of ['run', 'state', 'mail']) fs.mkdirSync(path.join(dir, d));
  fs.chownSync(path.join(dir, 'mail'), MAIL_UID, MAIL_UID);
  const port = await freePort();
  const home = (u: string): string => path.join(dir, 'mail', u);
  // passwd-file: user:password:uid:gid:gecos:home:shell. The user name is the whole address (auth_username_format %Lu).
  const users = ['bob@dove.test', 'carol@sock.test'];
  fs.writeFileSync(path.join(dir, 'users'), users.map((u) => `${u}::${MAIL_UID}:${MAIL_UID}::${home(u)}::\n`).join(''));
  const conf = path.join(dir, 'dovecot.conf');
  fs.writeFileSync(conf, `
base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${dir}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
first_valid_uid = ${MAIL_UID}
passdb {
  driver = passwd-file
  args = ${dir}/users
}
userdb {
  driver = passwd-file
  args = ${dir}/users
}
mail_location = maildir:~/Maildir
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = ${port}
  }
  unix_listener lmtp {
    mode = 0666
  }
}
`);
  const child = spawn(DOVECOT, ['-F', '-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const socket = path.join(dir, 'run', 'lmtp');
  const log = (): string => {
    try {
      return fs.readFileSync(path.join(dir, 'dovecot.log'), 'utf8') + stderr;
    } catch {
      return stderr;
    }
  };
  const listening = (): Promise<boolean> => new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true))).once('error', () => resolve(false));
  });
  await waitFor(async () => child.exitCode === null && fs.existsSync(socket) && (await listening()), 10_000, `Dovecot to listen (${log()})`);
  return {
    dir,
    port,
    socket,
    child,
    inbox: (u) => {
      const d = path.join(home(u), 'Maildir', 'new');
      return fs.existsSync(d) ? fs.readdirSync(d).map((f) => fs.readFileSync(path.join(d, f), 'latin1')) : [];
    },
    log,
  };
}

async function stopDovecot(d: Dovecot): Promise<void> {
  if (d.child.exitCode === null) {
    const exited = new Promise<void>((resolve) => d.child.once('exit', () => resolve()));
    d.child.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    if (d.child.exitCode === null) d.child.kill('SIGKILL');
  }
  fs.rmSync(d.dir, { recursive: true, force: true });
}

describe('LMTP delivery to a real Dovecot', { skip }, () => {
  let dovecot: Dovecot;
  let srv: TestServer;

  before(async () => {
    dovecot = await startDovecot();
    srv = await startServer({
      // The sender's own domain stays Maildir: the DSN lands there.
      domains: [
        { name: 'tern.test', mailboxes: ['alice'] },
        { name: 'dove.test', delivery: `lmtp://127.0.0.1:${dovecot.port}` },
        { name: 'sock.test', delivery: `lmtp:${dovecot.socket}` },
      ],
      // Mail from a trusted client gets its DSNs (src/bounce/backscatter.ts).
      trustedNetworks: ['127.0.0.1/32'],
    });
  });

  after(async () => {
    await srv?.stop();
    if (dovecot) await stopDovecot(dovecot);
  });

  it('delivers to the existing user and bounces the unknown one with Dovecot\'s 550 5.1.1, per recipient', async () => {
    const c = await open(srv.port('smtp'));
    // mailboxes '*' (the default): RCPT accepts every local part, and Dovecot's answer decides.
    const id = await sendMail(c, 'alice@tern.test', ['bob@dove.test', 'nobody@dove.test'], 'From: alice@tern.test\r\nTo: bob@dove.test\r\nSubject: over LMTP\r\n\r\nHello Dovecot.\r\n..dot line\r\n');
    await c.cmd('QUIT');
    c.close();

    await waitFor(() => dovecot.inbox('bob@dove.test').length === 1, 10_000, `bob's message in Dovecot's Maildir (${dovecot.log()})`);
    const [got] = dovecot.inbox('bob@dove.test');
    assert.match(got!, /Subject: over LMTP/);
    assert.match(got!, /\r?\n\.dot line\r?\n/, 'dot-stuffing undone by Dovecot');
    assert.match(got!, /^Return-Path: <alice@tern\.test>/m);
    assert.match(got!, new RegExp(`Received: .*\\n?.*${id}`), 'our Received header came along');

    // The unknown user: a DSN to alice carrying Dovecot's own reply.
    const [dsn] = await expectMailbox(srv.dataDir, 'tern.test', 'alice', 1);
    assert.match(dsn!, /multipart\/report/);
    assert.match(dsn!, /Final-Recipient: rfc822; ?nobody@dove\.test/i);
    assert.match(dsn!, /Status: 5\.1\.1/);
    assert.match(dsn!, /Diagnostic-Code: smtp; ?550 5\.1\.1 <nobody@dove\.test> User doesn't exist/);
    assert.doesNotMatch(dsn!, /Final-Recipient: rfc822; ?bob@dove\.test/i, 'the delivered recipient is not in the DSN');
    assert.match(dovecot.log(), /lmtp\(bob@dove\.test\).*saved mail to INBOX/);
  });

  it('delivers over Dovecot\'s unix socket, and reuses the TCP connection for the next message', async () => {
    const connectsBefore = (dovecot.log().match(/Connect from 127\.0\.0\.1/g) ?? []).length;
    const c = await open(srv.port('smtp'));
    await sendMail(c, 'alice@tern.test', ['carol@sock.test'], 'Subject: over the socket\r\n\r\nhi\r\n');
    await sendMail(c, 'alice@tern.test', ['bob@dove.test'], 'Subject: second\r\n\r\nhi again\r\n');
    await c.cmd('QUIT');
    c.close();
    await waitQueueEmpty(srv.dataDir);
    await waitFor(() => dovecot.inbox('carol@sock.test').length === 1 && dovecot.inbox('bob@dove.test').length === 2, 10_000, 'both delivered');
    assert.match(dovecot.inbox('carol@sock.test')[0]!, /Subject: over the socket/);
    const connectsAfter = (dovecot.log().match(/Connect from 127\.0\.0\.1/g) ?? []).length;
    assert.equal(connectsAfter, connectsBefore, 'the TCP connection of the first test was reused');
  });
});
