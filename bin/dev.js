#!/usr/bin/env node
// Development entry point: oclif loads the TypeScript sources in src/ through tsx, so no build is
// needed. Same Node 24 rule as bin/run.js.
const major = Number(process.versions.node.split('.')[0]);
if (major !== 24) {
  process.stderr.write(`svc: needs Node.js 24.x, but was started by ${process.version}. Run "npm run dev -- ..." instead.\n`);
  process.exit(1);
}
const { execute } = await import('@oclif/core');
// No user or linked plugins from the data folder (SVC_DATA_DIR), as in bin/run.js.
await execute({ development: true, dir: import.meta.url, loadOptions: { userPlugins: false } });
