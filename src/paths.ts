import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// The package root: the nearest folder above this module with svc's package.json. Works the same
// from src/ (tsx) and from a bundled chunk in dist/.
function findRoot(from: string): string {
  for (let dir = from; dir !== dirname(dir); dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'svc') return dir;
  }
  throw new Error(`cannot find svc's package.json above ${from}`);
}

export const ROOT = findRoot(dirname(fileURLToPath(import.meta.url)));
/** Where migrations live as TypeScript sources, and where `svc migrate create` writes. */
export const MIGRATIONS_DIR = join(ROOT, 'migrations');
