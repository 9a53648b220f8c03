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
    process.exitCode = 1;
  } else {
    // The child writes straight to our stdout/stderr (inherited), so nothing is buffered here to lose.
    const r = spawnSync(local, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
    process.exitCode = r.status ?? 1;
  }
} else {
  // run() ends the process once stdout and stderr are flushed.
  const { run } = await import('../src/cli/main.ts');
  await run(process.argv.slice(2));
}
