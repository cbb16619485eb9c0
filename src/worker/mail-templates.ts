import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ROOT } from '../paths.js';

/** The emails svc sends, each a set of templates in templates/mail/: `<name>.subject.hbs`, `.text.hbs`, `.html.hbs`. */
export const MAIL_TEMPLATES = ['order-confirmation', 'payment-failed'] as const;
export type MailTemplateName = (typeof MAIL_TEMPLATES)[number];

/** Where the templates are: shipped with the package (package.json `files`), read from the package root. */
export const MAIL_TEMPLATES_DIR = join(ROOT, 'templates', 'mail');

export interface RenderedMail {
  subject: string;
  text: string;
  html: string;
}

type Compiled = Record<keyof RenderedMail, (data: object) => string>;

/**
 * Renders the emails from the Handlebars templates in the repository (templates/mail/).
 *
 * Handlebars because its templates are logic-less (a template can show data and loop over it, but
 * runs no code, so editing the wording cannot break the worker) and `{{value}}` HTML-escapes by
 * default: a customer's name is data, never markup; only `{{{value}}}` would opt out, and no
 * template uses it. The HTML templates are compiled with that escaping, the subject and text ones
 * without it (`noEscape`: `&amp;` in a text/plain part would be wrong); all are `strict`, so a
 * value missing from the data is an error rather than a blank in a sent email. Compiled once per
 * renderer, on first use, in an isolated Handlebars environment.
 */
export class MailTemplates {
  private compiled?: Promise<Map<MailTemplateName, Compiled>>;

  constructor(private readonly dir: string = MAIL_TEMPLATES_DIR) {}

  /** The subject, text and HTML bodies of one email. */
  async render(name: MailTemplateName, data: object): Promise<RenderedMail> {
    const template = (await this.load()).get(name)!;
    return {
      subject: template.subject(data).replace(/\s+/g, ' ').trim(),
      text: template.text(data),
      html: template.html(data),
    };
  }

  private load(): Promise<Map<MailTemplateName, Compiled>> {
    this.compiled ??= (async () => {
      const { default: Handlebars } = await import('handlebars');
      const hb = Handlebars.create();
      const read = (name: string, part: string) => readFile(join(this.dir, `${name}.${part}.hbs`), 'utf8');
      const entries = await Promise.all(
        MAIL_TEMPLATES.map(async (name): Promise<[MailTemplateName, Compiled]> => {
          const [subject, text, html] = await Promise.all([read(name, 'subject'), read(name, 'text'), read(name, 'html')]);
          return [
            name,
            {
              subject: hb.compile(subject, { strict: true, noEscape: true }),
              text: hb.compile(text, { strict: true, noEscape: true }),
              html: hb.compile(html, { strict: true }),
            },
          ];
        }),
      );
      return new Map(entries);
    })().catch((err: unknown) => {
      this.compiled = undefined;
      throw err;
    });
    return this.compiled;
  }
}
