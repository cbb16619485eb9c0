import { invalid } from './errors.js';

// C0 and C1 control characters and DEL. PostgreSQL cannot store NUL (in text or jsonb), and an escape
// sequence kept in a name would run on the terminal of the operator who lists it (`svc users list`).
const CONTROL = /\p{Cc}/u;
const CONTROLS = /\p{Cc}/gu;
// Half of a UTF-16 surrogate pair on its own (JSON's "\ud800"): not a character, and not valid
// Unicode. PostgreSQL refuses it in jsonb (the audit row of a rename) and replaces it in text.
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Refuses text a person typed (a name, an email, a search, an API key's name, a SKU) that holds a
 * control character, tab and line break included (none of svc's free text is more than one line),
 * or a lone surrogate, naming the field (`what` is how the message calls it) and the character.
 */
export function refuseControlCharacters(text: string, field: string, what = `the ${field}`): void {
  const found = CONTROL.exec(text);
  if (found) {
    const code = found[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0');
    throw invalid(`${what} must not contain a control character (U+${code} at position ${found.index + 1})`, { field });
  }
  const lone = LONE_SURROGATE.exec(text);
  if (lone) {
    const code = lone[0].charCodeAt(0).toString(16).toUpperCase();
    throw invalid(`${what} is not valid Unicode (a lone surrogate U+${code} at position ${lone.index + 1})`, { field });
  }
}

/** A person's or a product's name as given: trimmed, 1 to 200 characters, no control character. */
export function checkName(raw: string): string {
  const name = raw.trim();
  if (name.length < 1 || name.length > 200) throw invalid('the name must be 1 to 200 characters', { field: 'name' });
  refuseControlCharacters(name, 'name');
  return name;
}

/**
 * Text with its control characters (but tab and line break) shown as `\u001b` and the like: stored
 * before names refused them, an escape sequence must not clear, retitle or recolour a terminal.
 */
export function escapeControlCharacters(text: string): string {
  return text.replace(CONTROLS, (c) => (c === '\t' || c === '\n' ? c : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`));
}
