// A private certificate authority for tests that need certificates that
// verify (MTA-STS requires a WebPKI-valid certificate, RFC 8461 §4.1; DANE-TA
// needs a chain). Made with the openssl command line in a temporary
// directory; EC P-256 keys, so a certificate costs milliseconds. Trust it in
// a child process with NODE_EXTRA_CA_CERTS=`caFile`, in-process with `ca`.

import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface IssuedCert {
  /** The leaf certificate (PEM). */
  cert: string;
  key: string;
  /** Leaf then the CA, as a server presents it. */
  chain: string;
}

export interface TestCa {
  cert: string;
  key: string;
  /** A file holding `cert`, for NODE_EXTRA_CA_CERTS. */
  caFile: string;
  dir: string;
  /** A server certificate for these DNS names (and 127.0.0.1); `expired` makes one whose validity ended yesterday. */
  issue(names: string[], opts?: { expired?: boolean }): Promise<IssuedCert>;
  close(): void;
}

let serial = 1;

export async function makeTestCa(commonName = 'Tern Test CA'): Promise<TestCa> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-ca-'));
  const caKey = path.join(dir, 'ca.key');
  const caFile = path.join(dir, 'ca.pem');
  await run('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', caKey]);
  await run('openssl', [
    'req', '-x509', '-new', '-key', caKey, '-out', caFile, '-days', '3650', '-subj', `/CN=${commonName}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  const cert = fs.readFileSync(caFile, 'utf8');
  const key = fs.readFileSync(caKey, 'utf8');

  async function issue(names: string[], opts: { expired?: boolean } = {}): Promise<IssuedCert> {
    const n = serial++;
    const base = path.join(dir, `leaf${n}`);
    await run('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${base}.key`]);
    await run('openssl', ['req', '-new', '-key', `${base}.key`, '-out', `${base}.csr`, '-subj', `/CN=${names[0] ?? 'localhost'}`]);
    const san = [...names.map((d) => `DNS:${d}`), 'IP:127.0.0.1'].join(',');
    fs.writeFileSync(`${base}.ext`, `basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=${san}\n`);
    if (opts.expired) {
      // openssl 3.0's x509 cannot set dates; `openssl ca` can: valid from 30 days ago to yesterday.
      fs.writeFileSync(`${base}.db`, '');
      fs.writeFileSync(`${base}.cnf`, [
        '[ca]', 'default_ca = test', '[test]', `database = ${base}.db`, `serial = ${base}.serial`, `new_certs_dir = ${dir}`, 'default_md = sha256',
        'policy = any', 'email_in_dn = no', 'unique_subject = no', '[any]', 'commonName = supplied', '',
      ].join('\n'));
      fs.writeFileSync(`${base}.serial`, (1000 + n).toString(16).padStart(4, '0') + '\n');
      await run('openssl', [
        'ca', '-batch', '-notext', '-config', `${base}.cnf`, '-cert', caFile, '-keyfile', caKey, '-in', `${base}.csr`,
        '-out', `${base}.pem`, '-extfile', `${base}.ext`,
        '-startdate', stamp(Date.now() - 30 * 86_400_000), '-enddate', stamp(Date.now() - 86_400_000),
      ]);
    } else {
      await run('openssl', [
        'x509', '-req', '-in', `${base}.csr`, '-CA', caFile, '-CAkey', caKey, '-set_serial', String(1000 + n),
        '-out', `${base}.pem`, '-extfile', `${base}.ext`, '-days', '825',
      ]);
    }
    const leaf = fs.readFileSync(`${base}.pem`, 'utf8');
    return { cert: leaf, key: fs.readFileSync(`${base}.key`, 'utf8'), chain: leaf + cert };
  }

  return { cert, key, caFile, dir, issue, close: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** YYYYMMDDHHMMSSZ, openssl's ASN.1 GeneralizedTime form. */
function stamp(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:T]/g, '').slice(0, 14) + 'Z';
}
