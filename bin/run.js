#!/usr/bin/env node
// svc runs on Node 24. When an older node starts this file (a bare `node bin/run.js`, or a PATH
// without node_modules/.bin), re-exec with the Node 24 that package.json pins as an optional
// dependency, or refuse with a message that says how to fix it.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const REQUIRED_MAJOR = 24;
const major = Number(process.versions.node.split('.')[0]);

if (major !== REQUIRED_MAJOR) {
  const pinned = fileURLToPath(new URL('../node_modules/.bin/node', import.meta.url));
  if (!process.env.SVC_REEXEC && existsSync(pinned)) {
    const child = spawnSync(pinned, [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
      stdio: 'inherit',
      env: { ...process.env, SVC_REEXEC: '1' },
    });
    if (child.error) {
      process.stderr.write(`svc: could not start Node ${REQUIRED_MAJOR} at ${pinned}: ${child.error.message}\n`);
      process.exit(1);
    }
    process.exit(child.status ?? (child.signal ? 128 + 1 : 1));
  }
  process.stderr.write(
    `svc: needs Node.js ${REQUIRED_MAJOR}.x, but was started by ${process.version}.\n` +
      `  Run it as "npx svc" or through "npm run", or install the pinned node with "npm ci".\n`,
  );
  process.exit(1);
}

// Cache compiled code between runs (in the OS temp folder): svc starts far faster the second time.
const { enableCompileCache } = await import('node:module');
enableCompileCache?.();

const { execute } = await import('@oclif/core');
await execute({ dir: import.meta.url });
