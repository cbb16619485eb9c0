import assert from 'node:assert/strict';

/** The error a promise rejects with (fails the test if it resolves, or rejects with a non-Error). */
export async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof Error, String(e));
    return e;
  }
  assert.fail('expected the call to fail');
}
