import { randomBytes } from 'node:crypto';

// Crockford base32: no I, L, O, U, so ids read unambiguously in a terminal.
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

let lastTime = -1;
let lastRandom: Uint8Array = new Uint8Array(10);

function increment(bytes: Uint8Array): Uint8Array {
  const next = Uint8Array.from(bytes);
  for (let i = next.length - 1; i >= 0; i--) {
    if (next[i] !== 0xff) {
      next[i]! += 1;
      return next;
    }
    next[i] = 0;
  }
  return next;
}

/**
 * A ULID: 48-bit millisecond time then 80 random bits, 26 characters of Crockford base32. Ids made
 * in the same millisecond by one process increase monotonically, so they sort by creation time.
 */
export function ulid(now = Date.now()): string {
  let random: Uint8Array;
  if (now === lastTime) {
    random = increment(lastRandom);
  } else {
    random = randomBytes(10);
    lastTime = now;
  }
  lastRandom = random;
  let out = '';
  let time = now;
  for (let i = 0; i < 10; i++) {
    out = ALPHABET[time % 32]! + out;
    time = Math.floor(time / 32);
  }
  // 80 random bits -> 16 characters of 5 bits each
  let bits = 0n;
  for (const b of random) bits = (bits << 8n) | BigInt(b);
  let rand = '';
  for (let i = 0; i < 16; i++) {
    rand = ALPHABET[Number(bits & 31n)]! + rand;
    bits >>= 5n;
  }
  return out + rand;
}

export type IdPrefix = 'usr' | 'prd' | 'ord' | 'itm' | 'aud' | 'rtk' | 'fam' | 'key' | 'evt' | 'pay' | 'ref' | 'fil' | 'msg' | 'dlv';

/** A new time-ordered id readable in a terminal, such as `ord_01JD3X…`. */
export function newId(prefix: IdPrefix): string {
  return `${prefix}_${ulid()}`;
}

/** Whether a string has the shape of an id with the given prefix. */
export function isId(prefix: IdPrefix, value: string): boolean {
  return new RegExp(`^${prefix}_[0-9A-HJKMNP-TV-Z]{26}$`).test(value);
}
