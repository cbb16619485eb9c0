/**
 * A fake of SendGrid's v3 Mail Send (`POST /v3/mail/send`) for the real `@sendgrid/mail` SDK:
 *
 *   const fake = await startFakeSendGrid();
 *   t.after(() => fake.close());
 *   const client = new Client();
 *   client.setApiKey(FAKE_SENDGRID_API_KEY);            // first: setApiKey resets the base URL
 *   client.setDefaultRequest('baseUrl', fake.url);
 *   const mail = new MailService();
 *   mail.setClient(client);                             // and never mail.setApiKey() after this
 *
 * It checks the Bearer key, validates the body as the Mail Send reference and its error list
 * describe (https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send,
 * https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors), answers 202 with an
 * `X-Message-Id`, and keeps every accepted message for assertions. Like SendGrid it has no
 * idempotency: the same message sent twice is two messages.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { listenOnLoopback, readBody, sendJson } from './http-server.js';

export const FAKE_SENDGRID_API_KEY = 'SG.svcfake00000000000000.0000000000000000000000000000000000000000000';

/** SendGrid's error body: `{"errors": [{"message", "field", "help"}]}`. */
export interface SendGridError {
  message: string;
  field: string | null;
  help: string | null;
}

export interface ReceivedMessage {
  /** The `X-Message-Id` the fake answered with. */
  messageId: string;
  /** The request body as received (snake_case, as the v3 API takes it). */
  body: Record<string, any>;
  apiKey: string;
  /** Every recipient address (to, cc and bcc of every personalization), lower-cased. */
  recipients: string[];
  receivedAt: Date;
}

interface FaultTarget {
  /** How many requests (default 1). */
  times?: number;
}

export interface ServerErrorFault extends FaultTarget {
  /** 500 (default), 502, 503 ... */
  status?: number;
  /** The message was accepted (and will be delivered) although the answer is an error. Default false. */
  accepted?: boolean;
}

export interface RateLimitFault extends FaultTarget {
  /** Seconds until the window resets (`X-RateLimit-Reset`), default 1. */
  resetInSeconds?: number;
}

export interface DelayFault extends FaultTarget {
  /** The message is accepted at once; the 202 leaves this much later (past a client timeout). */
  ms: number;
}

export interface FakeSendGridOptions {
  /** API keys the fake accepts (default: FAKE_SENDGRID_API_KEY). */
  apiKeys?: string[];
}

export interface FakeSendGrid {
  url: string;
  port: number;
  /** Every accepted message, in order. */
  readonly messages: readonly ReceivedMessage[];
  /** Accepted messages with this address among their recipients. */
  messagesTo(email: string): ReceivedMessage[];
  /** Every request's status, in order (for asserting retries). */
  readonly statuses: readonly number[];
  failNext(fault?: ServerErrorFault): void;
  rateLimitNext(fault?: RateLimitFault): void;
  delayNext(fault: DelayFault): void;
  /** Revokes an API key (as deleting it in SendGrid's settings does): its requests then answer 401. */
  revokeKey(key: string): void;
  /** Accepts an API key (a key created in SendGrid's settings). */
  acceptKey(key: string): void;
  close(): Promise<void>;
}

const HELP = 'http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message.';
const MAX_BODY_BYTES = 30 * 1024 * 1024;
const EMAIL = /^[^\s@<>(),;:"[\]]+@[^\s@<>(),;:"[\]]+\.[^\s@<>(),;:"[\]]+$/;
const DYNAMIC_TEMPLATE = /^d-[0-9a-f]{32}$/;
const LEGACY_TEMPLATE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function isObject(v: unknown): v is Record<string, any> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Every problem with a Mail Send body, in SendGrid's words; an empty list means it would be accepted. */
export function validateMailSend(body: unknown): SendGridError[] {
  const errors: SendGridError[] = [];
  const add = (message: string, field: string | null, anchor: string | null) => errors.push({ message, field, help: anchor ? HELP + anchor : null });
  if (!isObject(body)) {
    add('Bad Request', null, null);
    return errors;
  }

  const personalizations = body.personalizations;
  let recipients = 0;
  if (!Array.isArray(personalizations) || personalizations.length === 0) {
    add('The personalizations field is required and must have at least one personalization.', 'personalizations', 'personalizations');
  } else if (personalizations.length > 1000) {
    add(
      `The personalization block is limited to 1000 personalizations per API request. You have provided ${personalizations.length} personalizations. Please consider splitting this into multiple requests and resending your request.`,
      'personalizations',
      'personalizations',
    );
  } else {
    personalizations.forEach((p: unknown, i: number) => {
      if (!isObject(p)) {
        add('Each personalization must be an object.', `personalizations.${i}`, 'personalizations');
        return;
      }
      if (!Array.isArray(p.to) || p.to.length === 0) {
        add(
          'The to array is required for all personalization objects, and must have at least one email object with a valid email address.',
          `personalizations.${i}.to`,
          'personalizations.to',
        );
      }
      const seen = new Set<string>();
      for (const kind of ['to', 'cc', 'bcc'] as const) {
        const list = p[kind];
        if (list === undefined) continue;
        if (!Array.isArray(list)) {
          add(`The ${kind} field must be an array of email objects.`, `personalizations.${i}.${kind}`, `personalizations.${kind}`);
          continue;
        }
        list.forEach((address: unknown, j: number) => {
          recipients++;
          const email = isObject(address) ? address.email : undefined;
          if (typeof email !== 'string' || !EMAIL.test(email)) {
            add('Does not contain a valid address.', `personalizations.${i}.${kind}.${j}.email`, `personalizations.${kind}`);
            return;
          }
          const key = email.toLowerCase();
          if (seen.has(key)) {
            add(
              `Each email address in the personalization block should be unique between to, cc, and bcc. We found the first duplicate instance of [${email}] in the personalizations.${i}.${kind} field.`,
              `personalizations.${i}`,
              'personalizations',
            );
          }
          seen.add(key);
        });
      }
    });
    if (recipients > 1000) add('There is a limit of 1000 total recipients (to + cc + bcc) per request.', 'personalizations', 'personalizations');
  }

  if (!isObject(body.from) || body.from.email === undefined) {
    add(
      'The from object must be provided for every email send. It is an object that requires the email parameter, but may also contain a name parameter.  e.g. {"email" : "example@example.com"}  or {"email" : "example@example.com", "name" : "Example Recipient"}.',
      'from.email',
      'from',
    );
  } else if (typeof body.from.email !== 'string' || !EMAIL.test(body.from.email)) {
    add('The from email does not contain a valid address.', 'from.email', 'from');
  }
  if (body.reply_to !== undefined && (!isObject(body.reply_to) || typeof body.reply_to.email !== 'string' || !EMAIL.test(body.reply_to.email))) {
    add('The reply_to email does not contain a valid address.', 'reply_to.email', 'reply_to');
  }

  const templateId = body.template_id;
  if (templateId !== undefined && (typeof templateId !== 'string' || !(DYNAMIC_TEMPLATE.test(templateId) || LEGACY_TEMPLATE.test(templateId)))) {
    add(`The template_id must be a valid GUID, you provided '${String(templateId)}'.`, 'template_id', 'template_id');
  }
  const hasTemplate = typeof templateId === 'string';

  const everyPersonalizationHasSubject =
    Array.isArray(personalizations) &&
    personalizations.length > 0 &&
    personalizations.every((p: unknown) => isObject(p) && typeof p.subject === 'string' && p.subject !== '');
  if (!hasTemplate && !everyPersonalizationHasSubject && (typeof body.subject !== 'string' || body.subject === '')) {
    add(
      'The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined.',
      'subject',
      'subject',
    );
  }

  const content = body.content;
  if (content === undefined || (Array.isArray(content) && content.length === 0)) {
    if (!hasTemplate) {
      add(
        'Unless a valid template_id is provided, the content parameter is required. There must be at least one defined content block. We typically suggest both text/plain and text/html blocks are included, but only one block is required.',
        'content',
        'content',
      );
    }
  } else if (!Array.isArray(content)) {
    add('The content field must be an array of content objects.', 'content', 'content');
  } else {
    content.forEach((block: unknown, i: number) => {
      const type = isObject(block) ? block.type : undefined;
      const value = isObject(block) ? block.value : undefined;
      if (typeof type !== 'string' || type === '') add('Content types must be a string at least one character in length.', `content.${i}.type`, 'content.type');
      else if (/[;\r\n]/.test(type)) add("The content type cannot contain ';', or CRLF characters.", `content.${i}.type`, 'content.type');
      if (typeof value !== 'string' || value === '')
        add('The content value must be a string at least one character in length.', `content.${i}.value`, 'content.value');
    });
    const types = content.map((b: unknown) => (isObject(b) ? b.type : undefined));
    const expected = ['text/plain', 'text/html'].filter((t) => types.includes(t));
    if (expected.some((t, i) => types[i] !== t)) {
      add('If present, text/plain content must be first, followed by text/html, followed by any other content.', 'content', 'content');
    }
  }

  if (body.attachments !== undefined) {
    if (!Array.isArray(body.attachments)) add('The attachments field must be an array.', 'attachments', 'attachments');
    else
      body.attachments.forEach((a: unknown, i: number) => {
        if (!isObject(a) || typeof a.content !== 'string' || a.content === '')
          add('The attachment content is required.', `attachments.${i}.content`, 'attachments.content');
        else if (!BASE64.test(a.content.replace(/\s/g, '')))
          add('The attachment content must be base64 encoded.', `attachments.${i}.content`, 'attachments.content');
        if (!isObject(a) || typeof a.filename !== 'string' || a.filename === '')
          add('The attachment filename parameter is required.', `attachments.${i}.filename`, 'attachments.filename');
      });
  }
  return errors;
}

export async function startFakeSendGrid(options: FakeSendGridOptions = {}): Promise<FakeSendGrid> {
  const apiKeys = new Set(options.apiKeys ?? [FAKE_SENDGRID_API_KEY]);
  const messages: ReceivedMessage[] = [];
  const statuses: number[] = [];
  type Fault = ({ kind: 'error' } & ServerErrorFault) | ({ kind: 'rate_limit' } & RateLimitFault) | ({ kind: 'delay' } & DelayFault);
  const faults: Array<{ fault: Fault; remaining: number }> = [];

  function takeFault(kinds: Array<Fault['kind']>): Fault | undefined {
    const queued = faults[0];
    if (!queued || !kinds.includes(queued.fault.kind)) return undefined;
    if (--queued.remaining <= 0) faults.shift();
    return queued.fault;
  }

  const errorBody = (message: string, field: string | null = null, help: string | null = null) => ({ errors: [{ message, field, help }] });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req);
    const reply = (status: number, json: unknown, headers: Record<string, string> = {}) => {
      statuses.push(status);
      sendJson(res, status, json, headers);
    };
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (url.pathname !== '/v3/mail/send') {
      reply(404, errorBody('not found'));
      return;
    }
    if (req.method !== 'POST') {
      reply(405, errorBody('method not allowed'));
      return;
    }
    const auth = req.headers.authorization ?? '';
    if (!auth) {
      reply(401, errorBody('authorization required'));
      return;
    }
    const apiKey = /^Bearer (.+)$/i.exec(auth)?.[1]?.trim() ?? '';
    if (!apiKeys.has(apiKey)) {
      reply(401, errorBody('The provided authorization grant is invalid, expired, or revoked'));
      return;
    }

    const rateLimit = takeFault(['rate_limit']);
    if (rateLimit?.kind === 'rate_limit') {
      const reset = Math.floor(Date.now() / 1000) + (rateLimit.resetInSeconds ?? 1);
      reply(429, errorBody('too many requests'), { 'x-ratelimit-limit': '600', 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(reset) });
      return;
    }
    if (body.length > MAX_BODY_BYTES) {
      reply(413, errorBody('Payload Too Large'));
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      reply(400, errorBody('Bad Request'));
      return;
    }
    const errors = validateMailSend(parsed);
    if (errors.length) {
      reply(400, { errors });
      return;
    }
    // Sandbox mode validates without sending, and answers 200 instead of 202.
    if ((parsed as Record<string, any>).mail_settings?.sandbox_mode?.enable === true) {
      reply(200, undefined);
      return;
    }
    const fault = takeFault(['error', 'delay']);
    const accept = () => {
      const messageId = randomBytes(16).toString('base64url').slice(0, 22);
      const mail = parsed as Record<string, any>;
      const recipients = (mail.personalizations as Array<Record<string, any>>).flatMap((p) =>
        ['to', 'cc', 'bcc'].flatMap((k) => ((p[k] as Array<{ email: string }> | undefined) ?? []).map((a) => a.email.toLowerCase())),
      );
      messages.push({ messageId, body: mail, apiKey, recipients, receivedAt: new Date() });
      return messageId;
    };
    if (fault?.kind === 'error') {
      if (fault.accepted) accept();
      reply(fault.status ?? 500, errorBody('internal error'));
      return;
    }
    const messageId = accept();
    const answer = () => reply(202, undefined, { 'x-message-id': messageId });
    if (fault?.kind === 'delay') server.later(fault.ms, answer);
    else answer();
  }

  const server = await listenOnLoopback((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { errors: [{ message: `fake sendgrid bug: ${(e as Error).stack}`, field: null, help: null }] });
    });
  });

  return {
    url: server.url,
    port: server.port,
    get messages() {
      return messages;
    },
    messagesTo: (email) => messages.filter((m) => m.recipients.includes(email.toLowerCase())),
    get statuses() {
      return statuses;
    },
    failNext(fault = {}) {
      faults.push({ fault: { kind: 'error', ...fault }, remaining: fault.times ?? 1 });
    },
    rateLimitNext(fault = {}) {
      faults.push({ fault: { kind: 'rate_limit', ...fault }, remaining: fault.times ?? 1 });
    },
    delayNext(fault) {
      faults.push({ fault: { kind: 'delay', ...fault }, remaining: fault.times ?? 1 });
    },
    revokeKey: (key) => void apiKeys.delete(key),
    acceptKey: (key) => void apiKeys.add(key),
    close: () => server.close(),
  };
}
