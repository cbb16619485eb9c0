import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { MailMessage, Mailer } from '../domain/notifications/mailer.js';
import { writeFileAtomic } from './atomic-file.js';

const CRLF = '\r\n';

/** RFC 2047 encoded-word for a header value that is not plain ASCII (a name, a subject). */
function encodeWord(value: string): string {
  // Line breaks in a header value would start a header of their own.
  const flat = value.replace(/[\r\n]+/g, ' ');
  if (/^[\x20-\x7e]*$/.test(flat)) return flat;
  return `=?UTF-8?B?${Buffer.from(flat, 'utf8').toString('base64')}?=`;
}

/** A mailbox for From/To: `Name <address>`, the name as an atom, quoted, or encoded, as it needs. */
function mailbox(email: string, name?: string): string {
  const address = email.replace(/[\r\n<>\s]/g, '');
  if (!name) return address;
  const flat = name.replace(/[\r\n]+/g, ' ');
  const display = !/^[\x20-\x7e]*$/.test(flat)
    ? encodeWord(flat)
    : /^[A-Za-z0-9 !#$%&'*+/=?^_`{|}~-]*$/.test(flat)
      ? flat
      : `"${flat.replace(/(["\\])/g, '\\$1')}"`;
  return `${display} <${address}>`;
}

/** Splits `Name <address>` (or a bare address) as MAIL_FROM gives it. */
function parseMailbox(value: string): { email: string; name?: string } {
  const m = /^\s*"?([^"<]*?)"?\s*<([^>]+)>\s*$/.exec(value);
  return m ? { email: m[2]!, name: m[1] || undefined } : { email: value.trim() };
}

/** Quoted-printable (RFC 2045) of UTF-8 text, lines ending in CRLF, none longer than 76 characters. */
function quotedPrintable(text: string): string {
  const out: string[] = [];
  for (const line of text.replace(/\r\n?/g, '\n').split('\n')) {
    const bytes = Buffer.from(line, 'utf8');
    let current = '';
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i]!;
      const last = i === bytes.length - 1;
      // Printable ASCII stays as it is, except '='; a space or tab is encoded only at the end of a line.
      const plain = (b >= 33 && b <= 126 && b !== 61) || ((b === 32 || b === 9) && !last);
      const piece = plain ? String.fromCharCode(b) : `=${b.toString(16).toUpperCase().padStart(2, '0')}`;
      if (current.length + piece.length > 75) {
        out.push(`${current}=`);
        current = '';
      }
      current += piece;
    }
    out.push(current);
  }
  return out.join(CRLF);
}

// RFC 5322 date-time: `Tue, 05 May 2026 14:03:00 +0000`.
function rfc5322Date(date: Date): string {
  return date.toUTCString().replace(/GMT$/, '+0000');
}

/**
 * The mailer of the embedded default: each message becomes an RFC 5322 `.eml` file (MIME
 * multipart/alternative, text and HTML, quoted-printable) under `<data folder>/mail/`, which any
 * mail client opens. The file is named after the message's reference and written atomically, so
 * sending one message twice (a redelivered event) leaves one file, never a second or a torn one.
 */
export class LocalMailer implements Mailer {
  readonly name = 'local';
  private readonly from: { email: string; name?: string };

  constructor(
    /** The folder the .eml files go to. */
    readonly dir: string,
    from: string,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.from = parseMailbox(from);
  }

  /** The file a message with this reference is written to. */
  fileFor(reference: string): string {
    // The reference itself when it is a safe file name; otherwise a readable part and a hash of it.
    const name = /^[A-Za-z0-9][A-Za-z0-9._-]{0,150}$/.test(reference)
      ? reference
      : `${reference.replace(/[^A-Za-z0-9._-]+/g, '-').slice(0, 100)}-${createHash('sha256').update(reference).digest('hex').slice(0, 12)}`;
    return join(this.dir, `${name}.eml`);
  }

  /** Writes the message to its .eml file (replacing the file of an earlier send of the same reference). */
  async send(message: MailMessage): Promise<{ messageId: string }> {
    const digest = createHash('sha256').update(message.reference).digest('hex');
    const domain = this.from.email.split('@')[1] ?? 'localhost';
    const messageId = `<${digest.slice(0, 32)}@${domain}>`;
    const boundary = `=_svc_${digest.slice(0, 24)}`;
    const part = (type: string, body: string) =>
      [`--${boundary}`, `Content-Type: ${type}; charset=utf-8`, 'Content-Transfer-Encoding: quoted-printable', '', quotedPrintable(body)].join(CRLF);
    const eml = [
      `From: ${mailbox(this.from.email, this.from.name)}`,
      `To: ${mailbox(message.to.email, message.to.name)}`,
      `Subject: ${encodeWord(message.subject)}`,
      `Date: ${rfc5322Date(this.now())}`,
      `Message-ID: ${messageId}`,
      `X-Svc-Reference: ${encodeWord(message.reference)}`,
      `X-Svc-Category: ${encodeWord(message.category)}`,
      'MIME-Version: 1.0',
      `Content-Type: multipart/alternative; boundary="${boundary}"`,
      '',
      part('text/plain', message.text),
      part('text/html', message.html),
      `--${boundary}--`,
      '',
    ].join(CRLF);
    await writeFileAtomic(this.fileFor(message.reference), eml, 0o644);
    return { messageId };
  }
}
