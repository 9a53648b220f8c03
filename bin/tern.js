#!/usr/bin/env node
// Entry for the `tern` bin. In a checkout Tern runs its TypeScript directly
// on Node 24 (type stripping); an installed package (npm install -g
// tern-mta) runs the JavaScript that `npm pack` compiled into dist/, since
// Node refuses to strip types under node_modules. src/ wins when both are
// there, so a dist/ left in a checkout by `npm pack` is never run stale.
// An older `node` on PATH hands over to the Node 24 that `npm install` put
// in a checkout's node_modules (the pinned `node` dev dependency).
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const checkout = existsSync(fileURLToPath(new URL('../src/cli/main.ts', import.meta.url)));
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  const local = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url));
  if (!existsSync(local)) {
    const fix = checkout ? 'run npm install' : 'install Node.js 24 and put it first on PATH';
    process.stderr.write(`tern: needs Node.js 24 or later (this is ${process.version}); ${fix}\n`);
    process.exitCode = 1;
  } else {
    // The child writes straight to our stdout/stderr (inherited), so nothing is buffered here to lose.
    const child = spawn(local, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
    // `kill PID` and a reload reach this process, not the server: pass them on,
    // or the server would keep running, orphaned, after this one died of them.
    // Ctrl-C already reaches both through the terminal's process group; a
    // second SIGINT would cut the server's own graceful stop short.
    for (const sig of ['SIGTERM', 'SIGHUP']) process.on(sig, () => child.kill(sig));
    process.on('SIGINT', () => {});
    child.on('exit', (code, signal) => {
      process.exitCode = code ?? 128 + (signal ? constants.signals[signal] : 0);
    });
  }
} else {
  // run() ends the process once stdout and stderr are flushed.
  const { run } = checkout ? await import('../src/cli/main.ts') : await import('../dist/cli/main.js');
  await run(process.argv.slice(2));
}
