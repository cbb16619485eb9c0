/**
 * Just enough of Stripe's Search Query Language (https://docs.stripe.com/search#search-query-language)
 * for PaymentIntents: clauses `field:value`, `metadata['key']:'value'`, numeric `field>N`, `<`, `>=`,
 * `<=`, negation with `-`, joined by all-AND or all-OR (Stripe refuses a mix), at most 10 clauses.
 */

export interface SearchClause {
  field: string;
  /** For metadata['key'] clauses. */
  metadataKey?: string;
  op: ':' | '>' | '<' | '>=' | '<=';
  value: string | number;
  negated: boolean;
}

export interface SearchQuery {
  clauses: SearchClause[];
  join: 'AND' | 'OR';
}

export class SearchSyntaxError extends Error {}

/** Fields the PaymentIntent search supports (per Stripe's "Supported query fields for each resource"). */
const PAYMENT_INTENT_FIELDS: Record<string, 'string' | 'number' | 'metadata'> = {
  amount: 'number',
  created: 'number',
  currency: 'string',
  customer: 'string',
  status: 'string',
  metadata: 'metadata',
};

export function parseSearchQuery(query: string): SearchQuery {
  const clauses: SearchClause[] = [];
  const joins = new Set<'AND' | 'OR'>();
  let rest = query.trim();
  if (!rest) throw new SearchSyntaxError('The query is empty.');
  for (;;) {
    const m = /^(-?)([a-z_]+)(?:\[(['"])(.+?)\3\])?(>=|<=|:|>|<)(?:'([^']*)'|"([^"]*)"|(-?\d+))/.exec(rest);
    if (!m) throw new SearchSyntaxError(`Could not parse the query near: ${rest.slice(0, 40)}`);
    const [whole, neg, field, , key, op, single, double, number] = m as unknown as [
      string,
      string,
      string,
      string | undefined,
      string | undefined,
      SearchClause['op'],
      string | undefined,
      string | undefined,
      string | undefined,
    ];
    const kind = PAYMENT_INTENT_FIELDS[field];
    if (!kind) throw new SearchSyntaxError(`Field '${field}' is an unsupported search field for resource 'payment_intents'.`);
    if ((kind === 'metadata') !== (key !== undefined)) throw new SearchSyntaxError(`Field '${field}' is used incorrectly.`);
    if (kind !== 'number' && op !== ':') throw new SearchSyntaxError(`The operator '${op}' can only be used with numeric fields.`);
    const value = number !== undefined ? Number(number) : (single ?? double ?? '');
    if (kind === 'number' && typeof value !== 'number') throw new SearchSyntaxError(`Field '${field}' takes a number.`);
    clauses.push({ field, ...(key !== undefined ? { metadataKey: key } : {}), op, value, negated: neg === '-' });
    rest = rest.slice(whole.length).trim();
    if (!rest) break;
    const j = /^(AND|OR)\s+/.exec(rest);
    if (!j) throw new SearchSyntaxError(`Expected AND or OR near: ${rest.slice(0, 40)}`);
    joins.add(j[1] as 'AND' | 'OR');
    rest = rest.slice(j[0].length);
  }
  if (joins.size > 1) throw new SearchSyntaxError('A query can combine clauses with AND or with OR, not both.');
  if (clauses.length > 10) throw new SearchSyntaxError('A query can have at most 10 clauses.');
  return { clauses, join: joins.has('OR') ? 'OR' : 'AND' };
}

function clauseMatches(clause: SearchClause, object: Record<string, unknown>): boolean {
  let actual: unknown;
  if (clause.field === 'metadata') actual = (object.metadata as Record<string, string> | undefined)?.[clause.metadataKey!];
  else actual = object[clause.field];
  let hit: boolean;
  if (clause.op === ':') {
    // Exact match: metadata values as stored; the enumerated fields (status, currency) in any case.
    const fold = clause.field !== 'metadata' && typeof actual === 'string' && typeof clause.value === 'string';
    hit = fold ? (actual as string).toLowerCase() === (clause.value as string).toLowerCase() : actual === clause.value;
  } else {
    const n = Number(actual);
    const v = Number(clause.value);
    hit = clause.op === '>' ? n > v : clause.op === '<' ? n < v : clause.op === '>=' ? n >= v : n <= v;
  }
  return clause.negated ? !hit : hit;
}

export function matchesSearch(query: SearchQuery, object: Record<string, unknown>): boolean {
  return query.join === 'AND' ? query.clauses.every((c) => clauseMatches(c, object)) : query.clauses.some((c) => clauseMatches(c, object));
}
