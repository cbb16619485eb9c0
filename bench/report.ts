/** Options every benchmark target takes. */
export interface BenchOptions {
  /** Timed runs per measurement, after the warm-up runs. */
  runs: number;
  /** Seconds each load-test measurement lasts (targets that drive a server); each target has its default. */
  durationS?: number;
  /** Orders per second of a paced load (the pipeline target). */
  rate?: number;
  /** Orders per round, orders in flight and rounds per adapter set (the consumers target). */
  orders?: number;
  concurrency?: number;
  rounds?: number;
}

/** The timing figures of one measured command, in milliseconds. */
export interface Measurement {
  name: string;
  runs: number;
  medianMs: number;
  p90Ms: number;
  minMs: number;
  maxMs: number;
  /** Median divided by the target's baseline median. */
  ratio: number;
}

/** A ratio the benchmark compares against an objective; without maxRatio it is shown for information. */
export interface Goal {
  name: string;
  ratio: number;
  maxRatio?: number;
  met?: boolean;
  /** Shown instead of the ratio (a rate, a latency, a count). */
  value?: string;
  /** Shown instead of "≤ maxRatio x" when the target is not a maximum ratio. */
  target?: string;
}

/** What one target measured. */
export interface Report {
  title: string;
  measurements: Measurement[];
  /** Figures of another shape than timed runs (load tests), printed instead of the measurements table. */
  table?: { header: string[]; rows: string[][] };
  goals: Goal[];
  /** Lines printed after the targets: what was counted, where the time went. */
  notes?: string[];
}

/** A benchmark target: measures and returns its report; printing is left to run.ts. */
export type Target = (options: BenchOptions) => Promise<Report>;

const round = (ms: number) => Math.round(ms * 10) / 10;

/** Median, p90 (nearest rank), min and max of the samples, with the median's ratio to baselineMs. */
export function summarize(name: string, samples: number[], baselineMs?: number): Measurement {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (i: number) => sorted[Math.min(sorted.length - 1, Math.max(0, i))]!;
  const mid = sorted.length / 2;
  const median = sorted.length % 2 ? at(Math.floor(mid)) : (at(mid - 1) + at(mid)) / 2;
  return {
    name,
    runs: sorted.length,
    medianMs: round(median),
    p90Ms: round(at(Math.ceil(sorted.length * 0.9) - 1)),
    minMs: round(at(0)),
    maxMs: round(at(sorted.length - 1)),
    ratio: Math.round((median / (baselineMs ?? median)) * 100) / 100,
  };
}

/** A goal for ratio: met when it is at most maxRatio, informational when maxRatio is left out. */
export function goal(name: string, ratio: number, maxRatio?: number): Goal {
  return maxRatio === undefined ? { name, ratio } : { name, ratio, maxRatio, met: ratio <= maxRatio };
}

/** The report as aligned plain-text lines. */
export function formatReport(report: Report): string {
  const header = report.table?.header ?? ['name', 'runs', 'median ms', 'p90 ms', 'min ms', 'max ms', 'ratio'];
  const rows =
    report.table?.rows ??
    report.measurements.map((m) => [m.name, String(m.runs), ...[m.medianMs, m.p90Ms, m.minMs, m.maxMs].map((ms) => ms.toFixed(1)), `${m.ratio.toFixed(1)}x`]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ');
  const goalWidth = Math.max(...report.goals.map((g) => g.name.length));
  const values = report.goals.map((g) => g.value ?? `${g.ratio.toFixed(1)}x`);
  const valueWidth = Math.max(6, ...values.map((v) => v.length));
  const goals = report.goals.map((g, i) => {
    const verdict = g.met === undefined ? 'no target' : `${g.met ? 'met' : 'MISSED'} (target ${g.target ?? `≤ ${g.maxRatio}x`})`;
    return `  ${g.name.padEnd(goalWidth)}  ${values[i]!.padStart(valueWidth)}  ${verdict}`;
  });
  const notes = report.notes?.length ? ['', 'notes', ...report.notes.map((n) => `  ${n}`)] : [];
  return [report.title, line(header), ...rows.map(line), '', 'targets', ...goals, ...notes].join('\n');
}
