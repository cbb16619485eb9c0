// Builds dist/: the commands and everything they import bundled with esbuild (svc starts several
// times faster from one file than from ~800 module files), split so each command loads only the
// chunks it uses. Type-checking is `npm run typecheck`.
import { build } from 'esbuild';
import { rmSync } from 'node:fs';

rmSync(new URL('../dist', import.meta.url), { recursive: true, force: true });

await build({
  entryPoints: { 'src/commands': 'src/commands.ts' },
  outdir: 'dist',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node24',
  sourcemap: 'linked',
  // MikroORM looks extensions up by class name (Migrator); keep names as written.
  keepNames: true,
  // Stay outside the bundle: oclif (it must be the same copy bin/run.js loads), packages that
  // read files next to their own modules (PGlite's WASM, swagger-ui's assets), and optional
  // native add-ons.
  external: ['@oclif/core', '@electric-sql/*', '@fastify/swagger-ui', 'pg-native'],
  // CommonJS dependencies call require() for Node built-ins; give the ESM bundle one.
  banner: { js: "import { createRequire as __svcCreateRequire } from 'node:module'; const require = __svcCreateRequire(import.meta.url);" },
  chunkNames: 'src/chunks/[name]-[hash]',
  logLevel: 'warning',
});
