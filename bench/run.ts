import { parseArgs } from 'node:util';
import { formatReport, type Report, type Target } from './report.js';

// Each target is its own module, loaded only when it runs.
const targets: Record<string, () => Promise<{ run: Target }>> = {
  cli: () => import('./cli.js'),
  api: () => import('./api.js'),
  pipeline: () => import('./pipeline.js'),
  consumers: () => import('./consumers.js'),
  render: () => import('./render.js'),
};

const usage = `usage: npm run bench -- [target] [--runs N] [--duration S] [--rate R] [--orders N] [--concurrency K] [--rounds R] [--json]
  target      one of: ${Object.keys(targets).join(', ')} (default: all)
  --runs      timed runs per measurement of the cli target, rounds of the render target (default 15)
  --duration  seconds of load per measurement of the api and pipeline targets (default 10; the
              pipeline's sustained phase 20, its paced phase 30)
  --rate      orders per second of the pipeline's paced phase (default 100)
  --orders    orders per round of the consumers target (default 200)
  --concurrency
              messages in flight per consumer of the consumers target (default 10)
  --rounds    rounds per set of adapters of the consumers target, interleaved (default 3)
  --json      print the figures as one JSON document`;

const positive = (raw: string | undefined) => (raw === undefined ? undefined : Number.isInteger(Number(raw)) && Number(raw) >= 1 ? Number(raw) : NaN);

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        runs: { type: 'string', default: '15' },
        duration: { type: 'string' },
        rate: { type: 'string' },
        orders: { type: 'string' },
        concurrency: { type: 'string' },
        rounds: { type: 'string' },
        json: { type: 'boolean', default: false },
      },
    });
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${usage}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  const runs = positive(values.runs)!;
  const durationS = positive(values.duration);
  const rate = positive(values.rate);
  const counts = { orders: positive(values.orders), concurrency: positive(values.concurrency), rounds: positive(values.rounds) };
  const badCount = (Object.keys(counts) as (keyof typeof counts)[]).find((key) => Number.isNaN(counts[key]));
  const names = positionals.length ? positionals : Object.keys(targets);
  const unknown = names.filter((n) => !(n in targets));
  const problem = unknown.length
    ? `unknown target: ${unknown.join(', ')}`
    : Number.isNaN(runs)
      ? `--runs must be a positive integer, got ${values.runs}`
      : Number.isNaN(durationS)
        ? `--duration must be a positive integer, got ${values.duration}`
        : Number.isNaN(rate)
          ? `--rate must be a positive integer, got ${values.rate}`
          : badCount
            ? `--${badCount} must be a positive integer, got ${values[badCount]}`
            : undefined;
  if (problem) {
    process.stderr.write(`${problem}\n${usage}\n`);
    return 2;
  }

  const reports: Record<string, Report> = {};
  for (const name of names) {
    const { run } = await targets[name]!();
    reports[name] = await run({ runs, durationS, rate, ...counts });
    if (!values.json) process.stdout.write(`${formatReport(reports[name])}\n\n`);
  }
  if (values.json) process.stdout.write(`${JSON.stringify(reports, null, 2)}\n`);
  return 0;
}

// A missed target still exits 0: benchmarks report, they do not assert.
process.exitCode = await main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.message : String(err)}\n`);
  return 1;
});
