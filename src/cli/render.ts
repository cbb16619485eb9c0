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
