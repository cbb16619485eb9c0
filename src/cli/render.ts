import Table from 'cli-table3';

export interface Column<T> {
  header: string;
  get: (row: T) => Cell;
}

type Cell = string | number | boolean | Date | null | undefined;

// Control characters (but tab and line break) are shown as \u001b and the like: a stored name with an
// escape sequence must not clear, retitle or recolour the operator's terminal.
const CONTROL = /\p{Cc}/gu;
const escapeControl = (text: string): string =>
  text.replace(CONTROL, (c) => (c === '\t' || c === '\n' ? c : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`));

const show = (v: Cell): string => (v === null || v === undefined ? '' : escapeControl(String(v)));

// Plain tables: no colours, so output reads the same in a terminal, a pipe or a log.
const PLAIN = { head: [] as string[], border: [] as string[] };

/** A table with one row per item. */
export function renderTable<T>(rows: T[], columns: Column<T>[]): string {
  const table = new Table({ head: columns.map((c) => c.header), style: PLAIN });
  for (const row of rows) table.push(columns.map((c) => show(c.get(row))));
  return table.toString();
}

/** A two-column table of one record's fields. */
export function renderRecord(record: Record<string, unknown>): string {
  const table = new Table({ style: PLAIN });
  for (const [k, v] of Object.entries(record)) table.push({ [k]: show(typeof v === 'object' && v !== null ? JSON.stringify(v) : (v as Cell)) });
  return table.toString();
}
