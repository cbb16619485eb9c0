import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { goal, summarize, type BenchOptions, type Measurement, type Report } from './report.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'bin', 'run.js');
const WARMUP_RUNS = 2;
const PG_USERS = 50;
const EMBEDDED_USERS = 5;
/** The same server and variable the tests use. */
const PG_ADMIN_URL = process.env.TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

type Env = Record<string, string | undefined>;

function childEnv(extra: Env = {}): Env {
  // Each measurement picks its database explicitly: nothing inherited from the caller's shell or config file.
  const { DATABASE_URL: _url, SVC_CONFIG: _file, ...env } = process.env;
  return { ...env, LOG_LEVEL: 'warn', ...extra };
}

/** Runs process.execPath with args to completion; resolves its wall-clock time in ms, rejects with its stderr unless it exits 0. */
function timed(args: string[], env: Env): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      if (code === 0) resolve(ms);
      else reject(new Error(`node ${args.join(' ')} exited with ${code ?? signal}:\n${stderr}`));
    });
  });
}

async function measure(name: string, args: string[], env: Env, options: BenchOptions, floorMs?: number): Promise<Measurement> {
  process.stderr.write(`measuring ${name}…\n`);
  for (let i = 0; i < WARMUP_RUNS; i++) await timed(args, env);
  const samples: number[] = [];
  for (let i = 0; i < options.runs; i++) samples.push(await timed(args, env));
  return summarize(name, samples, floorMs);
}

/** Migrates the database env points at and creates users through the CLI, `parallel` processes at a time. */
async function seed(env: Env, users: number, parallel: number): Promise<void> {
  await timed([BIN, 'migrate'], env);
  let next = 1;
  const worker = async () => {
    for (let n = next++; n <= users; n = next++) {
      await timed([BIN, 'users', 'create', '--email', `user${n}@example.com`, '--name', `User ${n}`], env);
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
}

async function admin(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL });
  try {
    await client.connect();
  } catch (err) {
    throw new Error(`cannot reach PostgreSQL at ${PG_ADMIN_URL} (set TEST_PG_URL to another server): ${(err as Error).message}`, { cause: err });
  }
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

async function withPostgres<T>(fn: (url: string) => Promise<T>): Promise<T> {
  const name = `svc_bench_${randomBytes(6).toString('hex')}`;
  await admin(`create database "${name}"`);
  try {
    const url = new URL(PG_ADMIN_URL);
    url.pathname = `/${name}`;
    return await fn(url.toString());
  } finally {
    await admin(`drop database if exists "${name}" with (force)`);
  }
}

async function withDataDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'svc-bench-'));
  try {
    return await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Builds dist/ when it is missing: the benchmarks run the built binary, as users do. */
export function ensureBuilt(): void {
  // The bundle oclif loads (package.json oclif.commands.target).
  if (existsSync(join(ROOT, 'dist', 'src', 'commands.js'))) return;
  process.stderr.write('dist/src/commands.js is missing: running npm run build first\n');
  // stdout goes to stderr too, so --json output stays one document.
  const build = spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: ['ignore', 2, 2] });
  if (build.status !== 0) throw new Error(`npm run build failed (${build.error?.message ?? `exit ${build.status ?? build.signal}`})`);
}

/** Cold-start times of `svc` processes compared with a bare `node -e 0`. */
export async function run(options: BenchOptions): Promise<Report> {
  if (process.versions.node.split('.')[0] !== '24') {
    // bin/run.js would re-exec itself with the pinned Node 24, so the floor would not be comparable.
    throw new Error(`the cli benchmark needs Node 24 but runs on ${process.version}; start it with npm run bench`);
  }
  ensureBuilt();
  const floor = await measure('node -e 0 (floor)', ['-e', '0'], childEnv(), options);
  const version = await measure('svc --version', [BIN, '--version'], childEnv(), options, floor.medianMs);
  const postgres = await withPostgres(async (url) => {
    const env = childEnv({ DATABASE_URL: url });
    await seed(env, PG_USERS, 4);
    return measure(`svc users list (PostgreSQL, ${PG_USERS} users)`, [BIN, 'users', 'list'], env, options, floor.medianMs);
  });
  const embedded = await withDataDir(async (dir) => {
    const env = childEnv({ SVC_DATA_DIR: dir });
    // One process at a time: the embedded database is locked to the process that opens it.
    await seed(env, EMBEDDED_USERS, 1);
    return measure(`svc users list (embedded, ${EMBEDDED_USERS} users)`, [BIN, 'users', 'list'], env, options, floor.medianMs);
  });
  return {
    title: `cli: cold starts, ${options.runs} timed runs each after ${WARMUP_RUNS} warm-up runs; ratio = median / floor median`,
    measurements: [floor, version, postgres, embedded],
    goals: [
      goal('svc --version', version.ratio, 5),
      goal('svc users list on PostgreSQL', postgres.ratio, 10),
      goal('svc users list on embedded', embedded.ratio),
    ],
  };
}
