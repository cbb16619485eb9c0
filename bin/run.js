#!/usr/bin/env node
// svc runs on Node 24. When an older node starts this file (a bare `node bin/run.js`, or a PATH
// without node_modules/.bin), re-exec with the Node 24 that package.json pins as an optional
// dependency, or refuse with a message that says how to fix it.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';

const REQUIRED_MAJOR = 24;
const major = Number(process.versions.node.split('.')[0]);

if (major !== REQUIRED_MAJOR) {
  const pinned = fileURLToPath(new URL('../node_modules/.bin/node', import.meta.url));
  if (!process.env.SVC_REEXEC && existsSync(pinned)) {
    const child = spawn(pinned, [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
      stdio: 'inherit',
      // Its value is this process's pid: the child watches for it to go (see below).
      env: { ...process.env, SVC_REEXEC: String(process.pid) },
    });
    // This process only waits for svc: a signal sent to it (a supervisor's SIGTERM, a SIGINT, a
    // SIGHUP) is meant for svc and passed on, and it exits when svc does, with svc's code, or with
    // 128 + the number of the signal that killed svc, as a shell reports it.
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
    /** @type {{ error?: Error, code?: number | null, signal?: NodeJS.Signals | null }} */
    const ended = await new Promise((resolve) => {
      child.once('error', (error) => resolve({ error }));
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    if (ended.error) {
      process.stderr.write(`svc: could not start Node ${REQUIRED_MAJOR} at ${pinned}: ${ended.error.message}\n`);
      process.exit(1);
    }
    process.exit(ended.code ?? 128 + (ended.signal ? constants.signals[ended.signal] : 0));
  }
  process.stderr.write(
    `svc: needs Node.js ${REQUIRED_MAJOR}.x, but was started by ${process.version}.\n` +
      `  Run it as "npx svc" or through "npm run", or install the pinned node with "npm ci".\n`,
  );
  process.exit(1);
}

// Run by bin/run.js under an older node, which only waits for this process and passes signals on.
// Should it die without passing one on (SIGKILL from a supervisor or `timeout -s KILL`, the OOM
// killer), this process would run on orphaned, holding its port and the embedded database, so that
// a restart finds them taken: once its parent is gone it stops as on a SIGTERM (svc serve drains).
if (process.env.SVC_REEXEC) {
  const parent = Number(process.env.SVC_REEXEC);
  const watch = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(watch);
    process.kill(process.pid, 'SIGTERM');
  }, 500);
  watch.unref();
}

// `svc serve` is long-running: V8 would grow its heap toward the machine's memory (well past 250 MiB
// RSS under load, mostly young garbage). It runs with a bounded young generation and old space
// instead, restarted in place (same pid, so signals and supervisors are unaffected). Under load the
// state of the requests in flight survives scavenges and is promoted at tens of MiB/s; letting the
// old generation grow to three times its live size (within the bound) before a full collection
// makes those pauses a third as frequent, which is most of the API's p99 (npm run bench -- api).
// Values already given in NODE_OPTIONS or on the node command line win.
const SERVE_V8_FLAGS = ['--max-semi-space-size=16', '--max-old-space-size=160', '--heap-growing-percent=200'];
// A password hash (argon2id) allocates 19 MiB on a libuv thread. After the first such block is
// freed, glibc raises its mmap threshold past it, and each of the pool's threads then keeps up to
// twice that in its own malloc arena: RSS grew by ~140 MiB under a burst of logins however few
// hashes ran at once. A fixed threshold maps blocks of 4 MiB and more directly and unmaps them when
// freed, so PASSWORD_HASH_CONCURRENCY bounds that memory. Other C libraries (musl) ignore it.
const SERVE_MALLOC_ENV = { MALLOC_MMAP_THRESHOLD_: '4194304' };
if (process.argv[2] === 'serve' && typeof process.execve === 'function') {
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  const missing = SERVE_V8_FLAGS.filter((flag) => !given.some((g) => g.startsWith(flag.split('=')[0])));
  const missingEnv = Object.keys(SERVE_MALLOC_ENV).filter((name) => process.env[name] === undefined);
  if (missing.length > 0 || missingEnv.length > 0) {
    const env = { ...SERVE_MALLOC_ENV, ...process.env };
    process.execve(process.execPath, [process.execPath, ...missing, ...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], env);
  }
}

// The embedded database is PostgreSQL compiled to WebAssembly (PGlite). Opening it runs enough of
// that code for V8 to recompile much of it with its optimising compiler (TurboFan), most of the CPU a
// short command spends: `svc users list` on an embedded folder took 4.4 s of CPU, 1.8 s with
// WebAssembly left to the baseline compiler (Liftoff), which runs the same code a little slower; on
// a new folder 10.8 s, 7.0 s (npm run bench -- cli, wall: 3.3-3.7 s -> 1.3-1.5 s). The long-running
// commands keep TurboFan for their steady state, and commands on PostgreSQL (DATABASE_URL, from the
// environment, DATABASE_URL_FILE or the SVC_CONFIG file) load no WebAssembly. A V8 flag set at run
// time does not reach the WebAssembly compiler, so svc restarts in place with it (about 0.1 s of
// CPU). Nor do the commands that never open a database (help, the version, the configuration, key files):
// the restart would only add its cost (npm run bench -- cli: svc --version 234 -> 425 ms).
const NO_RESTART = new Set(['serve', 'worker', 'config', 'keys', 'help', '--help', '-h', '--version', '-v', '']);
const WASM_FLAG = '--liftoff-only';
/**
 * Whether svc's configuration sets DATABASE_URL: from the environment, a DATABASE_URL_FILE, or the
 * JSON file named by SVC_CONFIG (as src/config.ts reads them, without loading it). A file that
 * cannot be read or parsed counts as none: the command then stops on it, naming SVC_CONFIG.
 */
function databaseConfigured() {
  if (process.env.DATABASE_URL || process.env.DATABASE_URL_FILE?.trim()) return true;
  const file = process.env.SVC_CONFIG?.trim();
  if (!file) return false;
  try {
    const parsed = /** @type {unknown} */ (JSON.parse(readFileSync(file, 'utf8')));
    const value = parsed && typeof parsed === 'object' ? /** @type {Record<string, unknown>} */ (parsed).DATABASE_URL : undefined;
    return value !== undefined && value !== null;
  } catch {
    return false;
  }
}
const opensDatabase = !NO_RESTART.has(process.argv[2] ?? '') && !process.argv.includes('--help');
if (opensDatabase && typeof process.execve === 'function' && !process.execArgv.includes(WASM_FLAG) && !databaseConfigured()) {
  process.execve(process.execPath, [process.execPath, WASM_FLAG, ...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], process.env);
}

// Cache compiled code between runs (in the OS temp folder): svc starts far faster the second time.
const { enableCompileCache } = await import('node:module');
enableCompileCache?.();

const { run, flush, handle, Config } = await import('@oclif/core');
const argv = process.argv.slice(2);
/** @type {import('@oclif/core').Config | undefined} */
let loaded;
try {
  // A topic (`svc users`) is not a command: oclif prints its help. With --json, the same help as a
  // document on stdout: the topic, its commands and their summaries, its subtopics.
  if (argv.includes('--json') && argv.every((a) => a === '--json' || !a.startsWith('-'))) {
    const words = argv.filter((a) => a !== '--json');
    const config = await Config.load({ root: fileURLToPath(import.meta.url), userPlugins: false });
    loaded = config;
    const id = words.join(':');
    /** @type {unknown} */
    const about = config.pjson.description;
    const topic = id ? config.findTopic(id) : { description: typeof about === 'string' ? about : undefined };
    if (topic && !config.findCommand(id)) {
      const spaced = (/** @type {string} */ name) => name.replaceAll(':', ' ');
      const depth = id ? id.split(':').length + 1 : 1;
      const under = (/** @type {string} */ name) => (!id || name.startsWith(`${id}:`)) && name.split(':').length === depth;
      const help = {
        topic: spaced(id) || config.bin,
        description: topic.description ?? null,
        commands: config.commands
          .filter((c) => !c.hidden && under(c.id))
          .map((c) => ({ command: `${config.bin} ${spaced(c.id)}`, summary: c.summary ?? c.description?.split('\n')[0] ?? null })),
        topics: config.topics
          .filter((t) => !t.hidden && under(t.name) && (!config.findCommand(t.name) || config.commands.some((c) => c.id.startsWith(`${t.name}:`))))
          .map((t) => ({ topic: spaced(t.name), description: t.description ?? null })),
      };
      process.stdout.write(`${JSON.stringify(help, null, 2)}\n`);
      process.exit(0);
    }
  }
  // No user or linked plugins: oclif would load those listed in a package.json in its data folder, which
  // is SVC_DATA_DIR when set (svc's own data), so whoever could write that file would run code in every command.
  await run(argv, loaded ?? { root: fileURLToPath(import.meta.url), userPlugins: false });
  await flush();
} catch (error) {
  // A command that does not exist never reaches svc's own error handling (src/cli/base-command.ts):
  // with --json, its refusal is the same document on stdout, exit 2, as every command's.
  const exit = /** @type {{ oclif?: { exit?: number } }} */ (error)?.oclif?.exit;
  const message = error instanceof Error ? error.message : String(error);
  if (argv.includes('--json') && exit === 2 && /^command .* not found$/.test(message)) {
    process.stdout.write(`${JSON.stringify({ error: { code: 'invalid', message: `${message}: see svc --help for the commands`, exitCode: 2 } }, null, 2)}\n`);
    process.exitCode = 2;
  } else {
    await handle(error instanceof Error ? error : new Error(message));
  }
}
