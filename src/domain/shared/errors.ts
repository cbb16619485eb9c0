/** What went wrong, independent of transport: the edges map a code to an HTTP status or an exit code. */
export type ErrorCode =
  | 'invalid'
  | 'unprocessable'
  | 'not_found'
  | 'conflict'
  | 'forbidden'
  | 'unauthorized'
  | 'rate_limited'
  | 'unavailable'
  | 'retryable'
  | 'payment_failed'
  | 'internal';

/** An expected failure with a code and a message that tells the operator what to do next. */
export class DomainError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** Machine-readable details (field names, ids) for --json and problem+json bodies. */
    readonly details: Record<string, unknown> = {},
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'DomainError';
  }
}

export const invalid = (message: string, details?: Record<string, unknown>) => new DomainError('invalid', message, details);
export const notFound = (message: string, details?: Record<string, unknown>) => new DomainError('not_found', message, details);
export const conflict = (message: string, details?: Record<string, unknown>) => new DomainError('conflict', message, details);
