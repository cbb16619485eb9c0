import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { DomainError, type ErrorCode } from '../domain/shared/errors.js';
import { translateDatabaseError } from '../adapters/database.js';

/** The one table from domain error codes to HTTP statuses. */
export const STATUS_BY_CODE: Record<ErrorCode, number> = {
  invalid: 400,
  unauthorized: 401,
  payment_failed: 402,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  unprocessable: 422,
  rate_limited: 429,
  internal: 500,
  unavailable: 503,
  retryable: 503,
};

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  402: 'Payment Required',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  409: 'Conflict',
  413: 'Content Too Large',
  414: 'URI Too Long',
  415: 'Unsupported Media Type',
  431: 'Request Header Fields Too Large',
  422: 'Unprocessable Content',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** An RFC 9457 problem document, with svc's `code` and the offending `field` when there is one. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  code: string;
  field?: string;
  errors?: { field: string; message: string }[];
  traceId: string;
}

export const problemSchema = {
  $id: 'Problem',
  type: 'object',
  description: 'RFC 9457 problem details',
  required: ['type', 'title', 'status', 'code', 'traceId'],
  properties: {
    type: { type: 'string' },
    title: { type: 'string' },
    status: { type: 'integer' },
    detail: { type: 'string' },
    code: { type: 'string' },
    field: { type: 'string' },
    errors: { type: 'array', items: { type: 'object', properties: { field: { type: 'string' }, message: { type: 'string' } } } },
    traceId: { type: 'string' },
  },
} as const;

function problem(status: number, code: string, traceId: string, detail?: string, extra: Partial<Problem> = {}): Problem {
  return { type: `urn:svc:problem:${code}`, title: TITLES[status] ?? 'Error', status, code, traceId, ...(detail ? { detail } : {}), ...extra };
}

// ajv's instancePath is a JSON pointer (/items/0/quantity); fields are named items[0].quantity.
function fieldOf(part: string | undefined, instancePath: string, missing?: string): string {
  const path = instancePath
    .split('/')
    .filter(Boolean)
    .map((seg, i) => (/^\d+$/.test(seg) ? `[${seg}]` : i === 0 ? seg : `.${seg}`))
    .join('');
  const full = missing ? (path ? `${path}.${missing}` : missing) : path;
  return full || part || 'body';
}

/** Turns any error into a problem+json reply: 4xx say what was wrong, 5xx say nothing of the internals. */
export function errorHandler(err: FastifyError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const traceId = request.traceId;
  if (err.validation) {
    const part = err.validationContext;
    const errors = err.validation.map((v) => {
      const params = v.params as { missingProperty?: string; additionalProperty?: string };
      const field = fieldOf(part, v.instancePath, params.missingProperty ?? params.additionalProperty);
      const message = params.additionalProperty ? 'is not an accepted property' : params.missingProperty ? 'is required' : (v.message ?? 'is invalid');
      return { field, message };
    });
    const first = errors[0]!;
    // No body at all (rather than a wrong one): say what to send, not that `undefined` is not an object.
    if (part === 'body' && request.body === undefined) {
      return send(reply, problem(400, 'invalid', traceId, 'a JSON body is required (content-type: application/json)', { field: 'body', errors }));
    }
    return send(reply, problem(400, 'invalid', traceId, `${first.field} ${first.message}`, { field: first.field, errors }));
  }
  const translated = translateDatabaseError(err);
  if (translated instanceof DomainError) {
    const status = STATUS_BY_CODE[translated.code];
    if (status >= 500) {
      // svc's own refusal (a full password-hash queue under load, say) is expected: one warning line
      // without a stack. A failure underneath (the database unreachable) is an error, with its cause.
      if (translated === err) request.log.warn({ code: translated.code, reason: translated.message, traceId }, 'request refused for now (503)');
      else request.log.error({ err, traceId }, 'request failed');
      if (translated.code === 'retryable' || translated.code === 'unavailable') {
        // A busy part of svc says when it expects to have room again (see Bulkhead); otherwise 1 s.
        const retryAfter = translated.details.retryAfterSeconds;
        reply.header('retry-after', typeof retryAfter === 'number' ? String(retryAfter) : '1');
      }
      // A detail meant for clients (a statement timeout says so) is shown; anything else stays in the log.
      const clientDetail = typeof translated.details.clientDetail === 'string' ? translated.details.clientDetail : undefined;
      const detail = status === 503 ? (clientDetail ?? 'the service is temporarily unavailable; try again') : undefined;
      return send(reply, problem(status, translated.code, traceId, detail));
    }
    // A database refusal (a constraint hit in a race): the client gets the domain's words, the log
    // gets PostgreSQL's (the error's cause: code, constraint, detail) under the trace id.
    if (translated !== err) request.log.info({ err: translated, traceId }, 'the database refused the change');
    const field = typeof translated.details.field === 'string' ? translated.details.field : undefined;
    if (typeof translated.details.retryAfterSeconds === 'number') reply.header('retry-after', String(translated.details.retryAfterSeconds));
    return send(reply, problem(status, translated.code, traceId, translated.message, field ? { field } : {}));
  }
  // fastify's own 4xx (body too large, bad JSON, unsupported media type, not found ...)
  const status = err.statusCode ?? 500;
  if (status === 415) {
    const type = request.headers['content-type'] ?? 'no content type';
    return send(reply, problem(415, 'invalid', traceId, `a body of ${type} is not accepted: send application/json`));
  }
  if (status >= 400 && status < 500) {
    return send(reply, problem(status, status === 413 ? 'too_large' : 'invalid', traceId, err.message));
  }
  request.log.error({ err, traceId }, 'request failed');
  return send(reply, problem(500, 'internal', traceId));
}

function send(reply: FastifyReply, body: Problem): FastifyReply {
  return reply.code(body.status).type('application/problem+json').send(body);
}

/** 404 for routes that do not exist, as a problem document too. */
export function notFoundHandler(request: FastifyRequest, reply: FastifyReply): FastifyReply {
  return send(reply, problem(404, 'not_found', request.traceId, `no route ${request.method} ${request.url.split('?')[0]}`));
}

/**
 * Answers what fastify's router refuses before there is a route (a path with a broken percent-encoding
 * such as `%ff`, a path parameter longer than 200 characters) with a problem document too, in place of
 * fastify's `{"error", "code", "message", "statusCode"}`. No hook has run: the trace id is made here.
 */
export function frameworkErrorHandler(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const traceId = request.traceId || randomBytes(16).toString('hex');
  reply.header('x-trace-id', traceId);
  let answer: Problem;
  if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') {
    answer = problem(414, 'invalid', traceId, 'a path segment of the URL is too long (at most 200 characters)');
  } else if (err.code === 'FST_ERR_BAD_URL') {
    answer = problem(400, 'invalid', traceId, 'the URL is not valid: a percent-encoded part of its path is not UTF-8 (%ff, say)');
  } else {
    request.log.error({ err, traceId }, 'request failed');
    answer = problem(500, 'internal', traceId);
  }
  // The reply is thenable; nothing waits for it here (fastify calls this outside any route).
  void send(reply, answer);
}

/**
 * Answers what node's HTTP parser refuses before there is a request (a control character in a header,
 * headers too large, a request not received in time) with a problem document too, in place of
 * fastify's `{"error", "message", "statusCode"}`; then closes the connection, as node does.
 */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  // A reset connection has nobody left to answer.
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, detail] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'the request was not received in time']
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'the request headers are too large']
        : [400, 'the request is not valid HTTP/1.1 (a malformed request line or header)'];
  const answer = problem(status, 'invalid', randomBytes(16).toString('hex'), detail);
  const body = JSON.stringify(answer);
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${answer.title}\r\nContent-Type: application/problem+json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(err);
}
