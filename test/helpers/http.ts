import assert from 'node:assert/strict';

/** A parsed JSON body as tests read it. */
export type Json = Record<string, any>;

/**
 * Asserts an RFC 9457 problem answer: its status, content type and code, and (when given) a
 * detail matching a pattern and the field it names.
 */
export function assertProblem(res: { status: number; type?: string | null; body: Json }, status: number, code: string, detail?: RegExp, field?: string): void {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(res.type, 'application/problem+json; charset=utf-8');
  assert.equal(res.body.code, code);
  if (detail) assert.match(res.body.detail, detail);
  if (field) assert.equal(res.body.field, field);
}
