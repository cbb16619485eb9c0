// Builds dist/: the commands and everything they import bundled with esbuild (svc starts several
// times faster from one file than from ~800 module files), split so each command loads only the
// chunks it uses. Type-checking is `npm run typecheck`.
import { build } from 'esbuild';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';

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
  // read files next to their own modules (PGlite's WASM, swagger-ui's assets, pdfkit's font
  // metrics), and optional native add-ons. svc's own files read at run time (templates/mail/) are
  // found from the package root (src/paths.ts) and shipped through package.json `files`.
  external: ['@oclif/core', '@electric-sql/*', '@fastify/swagger-ui', 'pdfkit', 'pg-native'],
  // CommonJS dependencies call require() for Node built-ins; give the ESM bundle one.
  banner: { js: "import { createRequire as __svcCreateRequire } from 'node:module'; const require = __svcCreateRequire(import.meta.url);" },
  chunkNames: 'src/chunks/[name]-[hash]',
  logLevel: 'warning',
});

// keepNames wraps every named function in __name(fn, "name"), which redefines its name property:
// at module load for top-level code, but on EVERY call for functions made inside functions (fastify's
// hook runner and pg-pool make several per request; about 3 % of svc serve's CPU under load in a
// profile). A function declaration's name is already right, so the helper checks first; a closure
// passed to __name directly has none yet and still pays (about 2 % in the same profile).
const HELPER = 'var __name = (target, value) => __defProp(target, "name", { value, configurable: true });';
const CHECKED = 'var __name = (target, value) => target.name === value ? target : __defProp(target, "name", { value, configurable: true });';
const chunks = new URL('../dist/src/chunks/', import.meta.url);
const patched = readdirSync(chunks)
  .filter((f) => f.endsWith('.js'))
  .filter((f) => {
    const file = new URL(f, chunks);
    const text = readFileSync(file, 'utf8');
    if (!text.includes(HELPER)) return false;
    writeFileSync(file, text.replace(HELPER, CHECKED));
    return true;
  });
if (patched.length === 0) throw new Error("build: esbuild's __name helper was not found (its text changed?); update scripts/build.mjs");
