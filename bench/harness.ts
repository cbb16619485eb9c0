// What the load benchmarks (api, pipeline) share: child processes, a scratch PostgreSQL database,
// the seeded ids and the order bodies, autocannon runs, CPU time from /proc.
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import pg from 'pg';
import type { FakesReady, FakesRequest } from './fakes-host.js';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const BIN = join(ROOT, 'bin', 'run.js');
/** The same server and variable the tests use. */
export const PG_ADMIN_URL = process.env.TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export type Env = Record<string, string | undefined>;

export interface Figures {
  name: string;
  reqPerSec: number;
  p50: number;
  p99: number;
  /** Connection errors, timeouts and non-2xx answers. */
  errors: number;
  /** 2xx answers, warm-up included (for the stock accounting). */
  ok: number;
  rssBytes?: number;
  /** CPU time (user and system) the server spent per answered request of the measured run, in µs (Linux /proc). */
  cpuUsPerRequest?: number;
}

export interface Child {
  pid: number;
  /** The ready pattern's first group (the URL, for "listening on <url>"). */
  url: string;
  /** The last 20,000 characters of its stderr. */
  stderr(): string;
  stop(): Promise<void>;
}

/** Runs a command to completion; resolves its stdout, rejects with its output unless it exits 0. */
export function exec(cmd: string, args: string[], env: Env = process.env): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code, signal) =>
      code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} exited with ${code ?? signal}:\n${out}${err}`)),
    );
  });
}

/**
 * Starts a long-running node process and resolves once its stdout matches `ready` (by default
 * "listening on <url>"); its first group becomes `url`.
 */
export function startChild(name: string, args: string[], env: Env, ready = /listening on (http:\/\/[^\s)]+)/): Promise<Child> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const exited = new Promise<void>((done) => child.once('exit', () => done()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name} did not start within 60 s:\n${out}${err}`));
    }, 60_000);
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-20_000)));
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = ready.exec(out);
      if (!m) return;
      clearTimeout(timer);
      out = '';
      resolve({
        pid: child.pid!,
        url: m[1] ?? '',
        stderr: () => err,
        async stop() {
          if (child.exitCode !== null || child.signalCode !== null) return;
          child.kill('SIGTERM');
          const kill = setTimeout(() => child.kill('SIGKILL'), 15_000);
          await exited;
          clearTimeout(kill);
        },
      });
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited with ${code ?? signal} before it was ready:\n${out}${err}`));
    });
  });
}

/** Samples a process's resident set size (Linux /proc) until stopped; resolves the peak. */
export function sampleRss(pid: number): { stop(): number | undefined } {
  let peak: number | undefined;
  const read = () => {
    try {
      const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
      if (kb) peak = Math.max(peak ?? 0, Number(kb) * 1024);
    } catch {
      // no /proc (not Linux), or the process is gone
    }
  };
  read();
  const timer = setInterval(read, 200);
  return {
    stop() {
      clearInterval(timer);
      read();
      return peak;
    },
  };
}

// /proc/<pid>/stat counts CPU time in clock ticks: 100 a second on Linux (USER_HZ).
const TICKS_PER_SECOND = 100;

/**
 * CPU time (user and system) a process has used so far, in µs, from Linux /proc; undefined elsewhere
 * or once it is gone. Unlike a rate, it barely moves when other work shares the machine.
 */
export function cpuMicros(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces, in parentheses): state is the 3rd, utime the 14th, stime the 15th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND) * 1e6;
  } catch {
    return undefined;
  }
}

/** Drives url with autocannon: a warm-up, then the measured run (`afterWarmup` runs in between). */
export async function drive(
  name: string,
  url: string,
  run: { connections: number; warmupS: number; durationS: number },
  options: Partial<autocannon.Options>,
  pid?: number,
  afterWarmup?: () => Promise<void>,
): Promise<Figures> {
  process.stderr.write(`measuring ${name} (${run.warmupS} s warm-up, ${run.durationS} s)…\n`);
  const warm = await autocannon({ url, connections: run.connections, duration: run.warmupS, ...options });
  await afterWarmup?.();
  const rss = pid === undefined ? undefined : sampleRss(pid);
  const cpuBefore = pid === undefined ? undefined : cpuMicros(pid);
  const r = await autocannon({ url, connections: run.connections, duration: run.durationS, ...options });
  const cpuAfter = pid === undefined ? undefined : cpuMicros(pid);
  return {
    cpuUsPerRequest: cpuBefore === undefined || cpuAfter === undefined || r.requests.total === 0 ? undefined : (cpuAfter - cpuBefore) / r.requests.total,
    name,
    reqPerSec: r.requests.average,
    p50: r.latency.p50,
    p99: r.latency.p99,
    errors: r.errors + r.non2xx,
    ok: warm['2xx'] + r['2xx'],
    rssBytes: rss?.stop(),
  };
}

export async function admin<T>(fn: (client: pg.Client) => Promise<T>, url = PG_ADMIN_URL): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  try {
    await client.connect();
  } catch (err) {
    throw new Error(`cannot reach PostgreSQL at ${url.replace(/:[^:@/]*@/, ':****@')} (set TEST_PG_URL to another server): ${(err as Error).message}`, {
      cause: err,
    });
  }
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** A scratch database on the PostgreSQL server of TEST_PG_URL, dropped when fn settles. */
export async function withDatabase<T>(prefix: string, fn: (url: string, name: string) => Promise<T>): Promise<T> {
  const name = `${prefix}_${randomBytes(6).toString('hex')}`;
  await admin((c) => c.query(`create database "${name}"`));
  try {
    const url = new URL(PG_ADMIN_URL);
    url.pathname = `/${name}`;
    return await fn(url.toString(), name);
  } finally {
    await admin((c) => c.query(`drop database if exists "${name}" with (force)`));
  }
}

/** An id of svc's shape (prefix_ + 26 Crockford base32 characters; hex digits are a subset), unique per n. */
export const idOf = (prefix: string, n: string) => `'${prefix}_' || upper(lpad(to_hex(${n}), 10, '0') || substr(md5('${prefix}' || (${n})), 1, 16))`;

export const pick = <T>(items: readonly T[]): T => items[randomInt(items.length)]!;

/** A POST /orders body: `items` distinct products among SKU-00001 … SKU-<products>, 1 to 3 of each, paid with pm_card_visa. */
export function orderBody(products: number, items: number): string {
  const skus = new Set<number>();
  while (skus.size < items) skus.add(1 + randomInt(products));
  return JSON.stringify({
    paymentMethod: 'pm_card_visa',
    items: [...skus].map((n) => ({ sku: `SKU-${String(n).padStart(5, '0')}`, quantity: 1 + randomInt(3) })),
  });
}

export const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

/** svc's order ids: ord_ and 26 Crockford base32 characters. */
export const ORDER_ID = /ord_[0-9A-HJKMNP-TV-Z]{26}/g;

/** An email as the pipeline bench needs it: which orders it names, to whom, when it arrived (ms since the epoch). */
export interface MailSeen {
  orderIds: string[];
  recipients: string[];
  at: number;
}

/** One process as /proc shows it: its CPU so far (user and system) and that of its children it has reaped, in µs. */
export interface ProcessCpu {
  ppid: number;
  comm: string;
  /** The command line (a PostgreSQL backend shows its database there). */
  cmdline: string;
  us: number;
  reapedUs: number;
}

/** Every process's CPU and the whole machine's at one moment (Linux /proc; empty elsewhere). */
export interface CpuSample {
  processes: Map<number, ProcessCpu>;
  /** All cores together, in µs: time busy (user, nice, system, irq, softirq, steal) and in all. */
  machine?: { busyUs: number; totalUs: number; cores: number };
}

const ticksToUs = (ticks: string | undefined) => (Number(ticks) / TICKS_PER_SECOND) * 1e6;

function readProcess(pid: number): ProcessCpu | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return {
      ppid: Number(fields[1]),
      comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')),
      cmdline: readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim(),
      us: ticksToUs(fields[11]) + ticksToUs(fields[12]),
      reapedUs: ticksToUs(fields[13]) + ticksToUs(fields[14]),
    };
  } catch {
    return undefined; // gone since the listing, or no /proc
  }
}

export function sampleCpu(): CpuSample {
  const processes = new Map<number, ProcessCpu>();
  let names: string[];
  try {
    names = readdirSync('/proc').filter((n) => /^\d+$/.test(n));
  } catch {
    return { processes };
  }
  for (const name of names) {
    const p = readProcess(Number(name));
    if (p) processes.set(Number(name), p);
  }
  const lines = readFileSync('/proc/stat', 'utf8').split('\n');
  // cpu  user nice system idle iowait irq softirq steal (guest time is counted in user already)
  const [user, nice, system, idle, iowait, irq, softirq, steal] = (lines[0] ?? '')
    .split(/\s+/)
    .slice(1, 9)
    .map((t) => ticksToUs(t));
  const busyUs = user! + nice! + system! + irq! + softirq! + steal!;
  const cores = lines.filter((l) => /^cpu\d+ /.test(l)).length;
  return { processes, machine: Number.isFinite(busyUs) ? { busyUs, totalUs: busyUs + idle! + iowait!, cores } : undefined };
}

/**
 * CPU (µs) the processes `which` selects spent between two samples: of those alive at both, the
 * difference; of those started in between, all of it; of those that exited in between, what their
 * selected parent reaped (a PostgreSQL backend's, through the postmaster) less what they had spent
 * before (with `reaped` false, neither: exited processes are left out). Undefined without /proc.
 */
export function cpuBetween(before: CpuSample, after: CpuSample, which: (p: ProcessCpu, pid: number) => boolean, reaped = true): number | undefined {
  if (!after.processes.size) return undefined;
  let us = 0;
  for (const [pid, p] of after.processes) {
    if (!which(p, pid)) continue;
    const was = before.processes.get(pid);
    us += p.us - (was?.us ?? 0) + (reaped ? p.reapedUs - (was?.reapedUs ?? 0) : 0);
  }
  if (!reaped) return us;
  for (const [pid, p] of before.processes) {
    const parent = after.processes.get(p.ppid);
    if (!after.processes.has(pid) && which(p, pid) && parent && which(parent, p.ppid)) us -= p.us;
  }
  return us;
}

/** The Stripe and SendGrid fakes and s3rver in a process of their own (bench/fakes-host.ts), so their CPU is not the bench's. */
export interface FakesProcess {
  ready: FakesReady;
  pid: number;
  /** Sends a request and resolves with the first message of `type` that comes back. */
  ask<T>(request: FakesRequest, type: string): Promise<T>;
  /** Asks it to close, killing it if it has not exited after 5 s. */
  stop(): Promise<void>;
}

export function startFakesProcess(): Promise<FakesProcess> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = fork(join(ROOT, 'bench', 'fakes-host.ts'), [], {
      cwd: ROOT,
      // SVC_BENCH_CPU_PROF=<folder>: their V8 CPU profile is written there too (CPU.<date>.<pid>…).
      execArgv: ['--import', 'tsx', ...(process.env.SVC_BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.SVC_BENCH_CPU_PROF}`] : [])],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const exited = new Promise<void>((done) => child.once('exit', () => done()));
    child.once('exit', (code, signal) => reject(new Error(`the fakes (bench/fakes-host.ts) exited with ${code ?? signal} before they were ready`)));
    child.once('message', (ready: FakesReady) =>
      resolve({
        ready,
        pid: child.pid!,
        ask: <T>(request: FakesRequest, type: string) =>
          new Promise<T>((answer) => {
            const on = (message: { type: string }) => {
              if (message.type !== type) return;
              child.off('message', on);
              answer(message as T);
            };
            child.on('message', on);
            child.send(request);
          }),
        async stop() {
          if (child.exitCode !== null || child.signalCode !== null) return;
          child.send({ type: 'close' } satisfies FakesRequest);
          const kill = setTimeout(() => child.kill('SIGKILL'), 5_000);
          await exited;
          clearTimeout(kill);
        },
      }),
    );
  });
}
