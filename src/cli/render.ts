import Table from 'cli-table3';
import { escapeControlCharacters } from '../domain/shared/text.js';

export interface Column<T> {
  header: string;
  get: (row: T) => Cell;
}

type Cell = string | number | boolean | Date | null | undefined;

// A stored value's control characters are shown escaped: the operator's terminal does not run them.
const show = (v: Cell): string => (v === null || v === undefined ? '' : escapeControlCharacters(String(v)));

// Plain tables: no colours, so output reads the same in a terminal, a pipe or a log.
const PLAIN = { head: [] as string[], border: [] as string[] };

// The narrowest the last column is wrapped to, however narrow the terminal.
const MIN_LAST_COLUMN = 24;

/**
 * A table with one row per item. With `width` (a terminal's columns), a last column that would make
 * the table wider is wrapped at word boundaries to fit (no text is cut); without it, rows are as wide as
 * their text, for a pipe or a log.
 */
export function renderTable<T>(rows: T[], columns: Column<T>[], options: { width?: number } = {}): string {
  const cells = rows.map((row) => columns.map((c) => show(c.get(row))));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((r) => Math.max(...r[i]!.split('\n').map((l) => l.length)))) + 2);
  // Each column's text plus a space either side, and a border before each column and after the last.
  const total = widths.reduce((a, b) => a + b, 0) + columns.length + 1;
  const wrap = options.width !== undefined && total > options.width;
  const table = new Table({
    head: columns.map((c) => c.header),
    style: PLAIN,
    ...(wrap ? { colWidths: [...widths.slice(0, -1), Math.max(MIN_LAST_COLUMN, widths.at(-1)! - (total - options.width!))], wordWrap: true } : {}),
  });
  for (const row of cells) table.push(row);
  return table.toString();
}

/** A two-column table of one record's fields. */
export function renderRecord(record: Record<string, unknown>): string {
  const table = new Table({ style: PLAIN });
  for (const [k, v] of Object.entries(record)) table.push({ [k]: show(typeof v === 'object' && v !== null ? JSON.stringify(v) : (v as Cell)) });
  return table.toString();
}
