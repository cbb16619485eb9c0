import { invalid } from './errors.js';

// C0 and C1 control characters and DEL. PostgreSQL cannot store NUL (in text or jsonb), and an escape
// sequence kept in a name would run on the terminal of the operator who lists it (`svc users list`).
const CONTROL = /\p{Cc}/u;

/** Refuses text a person typed (a name, a search) that holds a control character, naming the field and the character. */
export function refuseControlCharacters(text: string, field: string): void {
  const found = CONTROL.exec(text);
  if (found) {
    const code = found[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0');
    throw invalid(`the ${field} must not contain a control character (U+${code} at position ${found.index + 1})`, { field });
  }
}
