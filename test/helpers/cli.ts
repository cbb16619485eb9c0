import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** The built binary: `npm test` builds dist/ first, so tests run what users run. */
export const BIN = join(ROOT, 'bin', 'run.js');

/** The rate limits turned off: tests and benches drive many requests from one address (a test that checks a limit sets it). */
export const NO_RATE_LIMITS = { RATE_LIMIT_IP_PER_MINUTE: '0', RATE_LIMIT_AUTH_IP_PER_MINUTE: '0', RATE_LIMIT_API_KEY_PER_HOUR: '0' } as const;

/**
 * V8 flags for the long-running `svc serve` and `svc worker` processes tests start: compile
 * WebAssembly with the baseline compiler (Liftoff) only, as every other svc command on the embedded
 * default already does by itself (bin/run.js). Opening an embedded folder compiles PGlite's 10 MB
 * module, and V8 then optimises its hot functions (TurboFan) on background threads: about 4 s of CPU
 * for a process a test keeps for seconds, against 1.5 s without the optimising tier. What svc does
 * is the same either way; only how V8 compiles PGlite's code differs. Not passed to another node
 * binary (options.node).
 */
const SVC_NODE_FLAGS: readonly string[] = ['--liftoff-only'];

/** The command line of a long-running `svc` process: node's flags (for our Node only), then the binary and its arguments. */
export function longRunningArgs(options: Pick<CliOptions, 'node'>, args: string[]): string[] {
  return [...(options.node ? [] : SVC_NODE_FLAGS), BIN, ...args];
}

export interface CliResult {
  code: number;
  /** The process's pid (the one a lock or a log line names). */
  pid: number;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON (for --json runs). */
  json<T = any>(): T;
}

export interface CliOptions {
  env?: Record<string, string | undefined>;
  input?: string;
  cwd?: string;
  node?: string;
}

/** Runs `svc ARGS` as a user would: a separate process, no terminal, real exit code. */
export function svc(args: string[], options: CliOptions = {}): Promise<CliResult> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, LOG_LEVEL: 'warn', ...NO_RATE_LIMITS, ...options.env })) {
    if (v !== undefined) env[k] = v;
  }
  // Tests choose the database explicitly: no inherited DATABASE_URL unless given.
  if (!options.env || !('DATABASE_URL' in options.env)) delete env.DATABASE_URL;
  return new Promise((resolve, reject) => {
    const child = spawn(options.node ?? process.execPath, [BIN, ...args], { cwd: options.cwd ?? ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      resolve({
        code: code ?? (signal ? 128 : -1),
        pid: child.pid!,
        stdout,
        stderr,
        json() {
          try {
            return JSON.parse(stdout);
          } catch {
            throw new Error(`stdout is not JSON (exit ${code}):\n${stdout}\nstderr:\n${stderr}`);
          }
        },
      });
    });
    child.stdin.end(options.input ?? '');
  });
}

/** A temporary folder removed when the test ends. */
export function tempDir(t: TestContext, prefix = 'svc-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface ServeProcess {
  child: ChildProcess;
  /** http://127.0.0.1:<port> from the "listening on" line. */
  url: string;
  /** Everything printed so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when stderr has a line matching pattern (already printed or still to come). */
  waitForStderr(pattern: RegExp): Promise<void>;
}

/**
 * Starts `svc serve ARGS` as a separate, long-running process and resolves once it prints
 * "listening on http://…" on stdout; rejects with its output when it exits first. Killed (SIGKILL)
 * when the test ends if it is still running.
 */
export function svcServe(t: TestContext, args: string[] = [], options: CliOptions = {}): Promise<ServeProcess> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, LOG_LEVEL: 'warn', ...NO_RATE_LIMITS, ...options.env })) {
    if (v !== undefined) env[k] = v;
  }
  if (!options.env || !('DATABASE_URL' in options.env)) delete env.DATABASE_URL;
  const child = spawn(options.node ?? process.execPath, longRunningArgs(options, ['serve', ...args]), {
    cwd: options.cwd ?? ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const watchers: { pattern: RegExp; resolve: () => void }[] = [];
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
    for (const w of [...watchers]) {
      if (w.pattern.test(stderr)) {
        watchers.splice(watchers.indexOf(w), 1);
        w.resolve();
      }
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return new Promise((resolve, reject) => {
    const onData = () => {
      const m = /listening on (http:\/\/\S+)/.exec(stdout);
      if (!m) return;
      child.stdout.off('data', onData);
      resolve({
        child,
        url: m[1]!,
        stdout: () => stdout,
        stderr: () => stderr,
        exited,
        waitForStderr: (pattern) =>
          pattern.test(stderr) ? Promise.resolve() : new Promise<void>((resolveWait) => watchers.push({ pattern, resolve: resolveWait })),
      });
    };
    child.stdout.on('data', onData);
    child.on('error', reject);
    void exited.then(({ code, signal }) => reject(new Error(`svc serve exited (${code ?? signal}) before listening:\n${stdout}\n${stderr}`)));
  });
}
