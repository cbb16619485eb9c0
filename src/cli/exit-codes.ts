import type { ErrorCode } from '../domain/shared/errors.js';

/** Exit codes, documented in the README; scripts may rely on them. */
export const EXIT = {
  ok: 0,
  internal: 1,
  invalid: 2,
  notFound: 3,
  conflict: 4,
  forbidden: 5,
  unavailable: 6,
  paymentFailed: 7,
  checkFailed: 8,
  config: 78,
} as const;

const BY_CODE: Record<ErrorCode, number> = {
  invalid: EXIT.invalid,
  unprocessable: EXIT.invalid,
  not_found: EXIT.notFound,
  conflict: EXIT.conflict,
  forbidden: EXIT.forbidden,
  unauthorized: EXIT.forbidden,
  unavailable: EXIT.unavailable,
  rate_limited: EXIT.unavailable,
  retryable: EXIT.unavailable,
  payment_failed: EXIT.paymentFailed,
  internal: EXIT.internal,
};

/** The one function that turns a domain error code into a process exit code. */
export function exitCodeFor(code: ErrorCode): number {
  return BY_CODE[code];
}
