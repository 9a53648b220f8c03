#!/usr/bin/env node
// Entry for the `tern` bin. Tern runs its TypeScript directly on Node 24
// (type stripping). An older `node` on PATH hands over to the Node 24 that
// `npm install` put in node_modules (the pinned `node` dev dependency).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  const local = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url));
  if (!existsSync(local)) {
    process.stderr.write(`tern: needs Node.js 24 or later (this is ${process.version}); run npm install\n`);
    process.exit(1);
  }
  const r = spawnSync(local, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
const { main } = await import('../src/cli/main.ts');
process.exit(await main(process.argv.slice(2)));
